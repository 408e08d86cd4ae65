"""The announcement and probe frames, byte for byte, and what answers say.
The expected announcements are what Linux 6.18 itself sent for the same MAC
and addresses (captured on a veth, with arp_notify and ndisc_notify set): a
receiver cannot tell ours from the kernel's."""

import ipaddress
import struct

import pytest

from vxlan.packets import announcement, holder_of, icmpv6_checksum, internet_checksum, probe

MAC = "02:42:0a:3d:00:32"

KERNEL_GARP = bytes.fromhex(
    "ffffffffffff" "02420a3d0032" "0806"          # broadcast, from MAC, ARP
    "0001" "0800" "06" "04" "0001"                # Ethernet, IPv4, sizes, request
    "02420a3d0032" "0a3d0032"                     # sender: MAC, 10.61.0.50
    "000000000000" "0a3d0032")                    # target: none, 10.61.0.50

KERNEL_NA = bytes.fromhex(
    "333300000001" "02420a3d0032" "86dd"          # all nodes, from MAC, IPv6
    "60000000" "0020" "3a" "ff"                   # 32 bytes of ICMPv6, hop limit 255
    "fd610000000000000000000000000050"            # from fd61::50
    "ff020000000000000000000000000001"            # to ff02::1
    "88" "00" "4e8b" "20000000"                   # NA, checksum, flags: override only
    "fd610000000000000000000000000050"            # target fd61::50
    "02" "01" "02420a3d0032")                     # target link-layer address: MAC


def test_gratuitous_arp_is_the_kernels():
    assert announcement(MAC, "10.61.0.50") == KERNEL_GARP


def test_unsolicited_na_is_the_kernels():
    assert announcement(MAC, "fd61::50") == KERNEL_NA


ARP_PROBE = bytes.fromhex(
    "ffffffffffff" "02420a3d0032" "0806"          # broadcast, from MAC, ARP
    "0001" "0800" "06" "04" "0001"                # Ethernet, IPv4, sizes, request
    "02420a3d0032" "00000000"                     # sender: MAC, no address yet
    "000000000000" "0a3d0032")                    # target: none, 10.61.0.50

# what Linux sends for DAD (captured with the link-local address above), but
# without the nonce option (RFC 7527) and so with 8 bytes less and another checksum
DAD_SOLICITATION = bytes.fromhex(
    "3333ff3d0032" "02420a3d0032" "86dd"          # solicited-node group, from MAC, IPv6
    "60000000" "0018" "3a" "ff"                   # 24 bytes of ICMPv6, hop limit 255
    "00000000000000000000000000000000"            # from :: (no address yet)
    "ff0200000000000000000001ff3d0032"            # to ff02::1:ff3d:32
    "87" "00" "7207" "00000000"                   # NS, checksum, reserved
    "fe8000000000000000420afffe3d0032")           # target fe80::42:aff:fe3d:32


def test_arp_probe():
    assert probe(MAC, "10.61.0.50") == ARP_PROBE


def test_dad_solicitation():
    assert probe(MAC, "fe80::42:aff:fe3d:32") == DAD_SOLICITATION


@pytest.mark.parametrize("frame", [
    announcement("02:ff:ff:ff:ff:fe", "fd61::50"),
    announcement("02:ff:ff:ff:ff:fe", "2001:db8:ffff::ffff"),
    announcement("02:ff:ff:ff:ff:fe", "fe80::1"),
    probe("02:ff:ff:ff:ff:fe", "fd61::50"),
])
def test_icmpv6_checksum_verifies_over_the_pseudo_header(frame):
    # a receiver sums pseudo-header and message, checksum included: all ones
    source, destination = frame[22:38], frame[38:54]
    message = frame[54:]
    pseudo = source + destination + struct.pack("!I3xB", len(message), 58)
    assert internet_checksum(pseudo + message) == 0


def test_checksum_of_the_message_with_a_zero_field():
    body = bytes.fromhex("20000000" + "fd610000000000000000000000000050" + "020102420a3d0032")
    assert icmpv6_checksum(ipaddress.IPv6Address("fd61::50"), ipaddress.IPv6Address("ff02::1"),
                           136, 0, body) == 0x4E8B


def test_internet_checksum_pads_an_odd_length_and_folds_carries():
    assert internet_checksum(b"\xff\xff\xff\xff") == 0  # 0xffff + 0xffff folds to 0xffff
    assert internet_checksum(b"\x01") == 0xFEFF  # 0x0100 after padding
    assert internet_checksum(b"") == 0xFFFF


HOLDER = "02:42:0a:3d:00:99"
ARP_REPLY_TO_PROBE = bytes.fromhex(               # what Linux answers ARP_PROBE with
    "02420a3d0032" "02420a3d0099" "0806" "0001080006040002"
    "02420a3d0099" "0a3d0032" "02420a3d0032" "00000000")


def test_the_holder_of_an_arp_answer_or_announcement():
    assert holder_of(ARP_REPLY_TO_PROBE) == ("10.61.0.50", HOLDER)
    assert holder_of(announcement(HOLDER, "10.61.0.50")) == ("10.61.0.50", HOLDER)


def test_the_holder_of_a_neighbour_advertisement():
    assert holder_of(announcement(HOLDER, "fd61::50")) == ("fd61::50", HOLDER)
    without_option = KERNEL_NA[:-8]  # then the Ethernet source says who
    assert holder_of(without_option) == ("fd61::50", MAC)


@pytest.mark.parametrize("frame", [
    ARP_PROBE,                   # asks, holds nothing
    DAD_SOLICITATION,            # asks too
    ARP_REPLY_TO_PROBE[:41],     # cut short
    KERNEL_NA[:70],
    b"\x00" * 12 + b"\x08\x00" + b"\x45" + b"\x00" * 40,  # IPv4
    b"",
])
def test_frames_that_name_no_holder(frame):
    assert holder_of(frame) is None
