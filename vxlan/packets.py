"""The Ethernet frames that announce a container's addresses: a gratuitous ARP
for an IPv4 address and an unsolicited neighbour advertisement for an IPv6
address (RFC 5227 section 2.3, RFC 4861 section 7.2.6).

Pure functions that build bytes; announce.py sends them.
"""

import ipaddress
import struct

BROADCAST = b"\xff" * 6
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"  # 33:33 + the low 32 bits of ff02::1
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD

ARP_REQUEST = 1
ICMPV6 = 58
NEIGHBOUR_ADVERTISEMENT = 136
NA_OVERRIDE = 0x20000000  # the O flag: replace the cached link-layer address
TARGET_LINK_LAYER_ADDRESS = 2  # option type; its length counts units of 8 bytes


def mac_bytes(mac):
    """b'\\x02\\x42...' of "02:42:..."."""
    return bytes.fromhex(mac.replace(":", ""))


def announcement(mac, address):
    """The frame that announces ADDRESS (an IPv4 or IPv6 address, as text) at MAC."""
    ip = ipaddress.ip_address(address)
    return gratuitous_arp(mac, ip) if ip.version == 4 else unsolicited_na(mac, ip)


def gratuitous_arp(mac, ipv4):
    """An ARP announcement: a broadcast request whose sender and target address
    are both IPV4. Linux updates an entry it already holds for IPV4 (it
    creates none unless arp_accept is set), whatever its lock time."""
    sender = mac_bytes(mac)
    packed = ipaddress.IPv4Address(ipv4).packed
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, ARP_REQUEST,
                      sender, packed, b"\x00" * 6, packed)
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
    checksum = icmpv6_checksum(source, ALL_NODES, NEIGHBOUR_ADVERTISEMENT, 0, body)
    icmp = struct.pack("!BBH", NEIGHBOUR_ADVERTISEMENT, 0, checksum) + body
    # version 6, no traffic class or flow label; hop limit 255, as ND requires
    header = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), ICMPV6, 255,
                         source.packed, ALL_NODES.packed)
    return _ethernet(ALL_NODES_MAC, sender, ETH_P_IPV6) + header + icmp


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
