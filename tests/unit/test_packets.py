"""The announcement frames, byte for byte. The expected frames are what Linux
6.18 itself sent for the same MAC and addresses (captured on a veth, with
arp_notify and ndisc_notify set): a receiver cannot tell ours from the kernel's."""

import ipaddress
import struct

import pytest

from vxlan.packets import announcement, icmpv6_checksum, internet_checksum

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


@pytest.mark.parametrize("address", ["fd61::50", "2001:db8:ffff::ffff", "fe80::1"])
def test_icmpv6_checksum_verifies_over_the_pseudo_header(address):
    # a receiver sums pseudo-header and message, checksum included: all ones
    frame = announcement("02:ff:ff:ff:ff:fe", address)
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
