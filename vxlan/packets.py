"""The Ethernet frames that announce a container's addresses: a gratuitous ARP
for an IPv4 address and an unsolicited neighbour advertisement for an IPv6
address (RFC 5227 section 2.3, RFC 4861 section 7.2.6); the frames that ask
whether anyone holds an address (an ARP probe, RFC 5227 2.1.1, and a duplicate
address detection solicitation, RFC 4862 5.4.2); and what an answer says.

Pure functions on bytes; announce.py and probe.py send them.
"""

import ipaddress
import struct

BROADCAST = b"\xff" * 6
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"  # 33:33 + the low 32 bits of ff02::1
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD

ARP_REQUEST, ARP_REPLY = 1, 2
ICMPV6 = 58
NEIGHBOUR_SOLICITATION, NEIGHBOUR_ADVERTISEMENT = 135, 136
UNSPECIFIED = ipaddress.IPv6Address("::")
NA_OVERRIDE = 0x20000000  # the O flag: replace the cached link-layer address
TARGET_LINK_LAYER_ADDRESS = 2  # option type; its length counts units of 8 bytes


def mac_bytes(mac):
    """b'\\x02\\x42...' of "02:42:..."."""
    return bytes.fromhex(mac.replace(":", ""))


def announcement(mac, address):
    """The frame that announces ADDRESS (an IPv4 or IPv6 address, as text) at MAC."""
    ip = ipaddress.ip_address(address)
    return gratuitous_arp(mac, ip) if ip.version == 4 else unsolicited_na(mac, ip)


def probe(mac, address):
    """The frame that asks, from MAC, whether anyone holds ADDRESS."""
    ip = ipaddress.ip_address(address)
    return arp_probe(mac, ip) if ip.version == 4 else dad_solicitation(mac, ip)


def gratuitous_arp(mac, ipv4):
    """An ARP announcement: a broadcast request whose sender and target address
    are both IPV4. Linux updates an entry it already holds for IPV4 (it
    creates none unless arp_accept is set), whatever its lock time."""
    packed = ipaddress.IPv4Address(ipv4).packed
    return _arp_request(mac, packed, packed)


def arp_probe(mac, ipv4):
    """A broadcast ARP request for IPV4 whose sender address is 0.0.0.0: the
    holder of IPV4 answers it, and nobody takes it for an announcement."""
    return _arp_request(mac, b"\x00" * 4, ipaddress.IPv4Address(ipv4).packed)


def _arp_request(mac, sender_ip, target_ip):
    sender = mac_bytes(mac)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, ARP_REQUEST,
                      sender, sender_ip, b"\x00" * 6, target_ip)
    return _ethernet(BROADCAST, sender, ETH_P_ARP) + arp


def unsolicited_na(mac, ipv6):
    """An unsolicited neighbour advertisement to all nodes, from and for IPV6,
    with the override flag and the target link-layer address MAC. Linux
    replaces the link-layer address of an entry it holds for IPV6 (and creates
    none: accept_untracked_na is off by default)."""
    sender = mac_bytes(mac)
    source = ipaddress.IPv6Address(ipv6)
    option = struct.pack("!BB6s", TARGET_LINK_LAYER_ADDRESS, 1, sender)
    body = struct.pack("!I16s", NA_OVERRIDE, source.packed) + option
    return _icmpv6(sender, ALL_NODES_MAC, source, ALL_NODES, NEIGHBOUR_ADVERTISEMENT, body)


def dad_solicitation(mac, ipv6):
    """A neighbour solicitation for IPV6 from the unspecified address to its
    solicited-node group, as duplicate address detection sends it: the holder
    of IPV6 answers with an advertisement to all nodes."""
    target = ipaddress.IPv6Address(ipv6)
    group = ipaddress.IPv6Address(b"\xff\x02" + b"\x00" * 9 + b"\x01\xff" + target.packed[13:])
    return _icmpv6(mac_bytes(mac), b"\x33\x33" + group.packed[12:], UNSPECIFIED, group,
                   NEIGHBOUR_SOLICITATION, struct.pack("!4x16s", target.packed))


def _icmpv6(sender_mac, destination_mac, source, destination, icmp_type, body):
    checksum = icmpv6_checksum(source, destination, icmp_type, 0, body)
    icmp = struct.pack("!BBH", icmp_type, 0, checksum) + body
    # version 6, no traffic class or flow label; hop limit 255, as ND requires
    header = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), ICMPV6, 255,
                         source.packed, destination.packed)
    return _ethernet(destination_mac, sender_mac, ETH_P_IPV6) + header + icmp


def holder_of(frame):
    """(address, MAC) that FRAME says holds an address: the sender of an ARP
    request or reply that has a sender address, or the target of a neighbour
    advertisement and its link-layer address; else None."""
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == ETH_P_ARP and len(frame) >= 42:
        kind, sender, sender_ip = frame[14:21], frame[22:28], frame[28:32]
        if (kind == bytes.fromhex("00010800060400") and frame[21] in (ARP_REQUEST, ARP_REPLY)
                and sender_ip != b"\x00" * 4):
            return str(ipaddress.IPv4Address(sender_ip)), _mac_text(sender)
    if (ethertype == ETH_P_IPV6 and len(frame) >= 78 and frame[20] == ICMPV6
            and frame[54] == NEIGHBOUR_ADVERTISEMENT):
        target = str(ipaddress.IPv6Address(frame[62:78]))
        option = frame[78:86]
        if len(option) == 8 and option[0] == TARGET_LINK_LAYER_ADDRESS and option[1] == 1:
            return target, _mac_text(option[2:8])
        return target, _mac_text(frame[6:12])
    return None


def _mac_text(packed):
    return ":".join(f"{b:02x}" for b in packed)


def icmpv6_checksum(source, destination, icmp_type, code, body):
    """The ICMPv6 checksum (RFC 4443 2.3) over the pseudo-header of RFC 8200 8.1
    and the message whose checksum field is zero."""
    message = struct.pack("!BBH", icmp_type, code, 0) + body
    pseudo = struct.pack("!16s16sI3xB", source.packed, destination.packed, len(message), ICMPV6)
    return internet_checksum(pseudo + message)


def internet_checksum(data):
    """The ones' complement of the ones' complement sum of 16-bit words (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ethernet(destination, source, ethertype):
    return struct.pack("!6s6sH", destination, source, ethertype)
