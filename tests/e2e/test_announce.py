"""A container that moves keeps its address reachable: three lab hosts, one
network on all of them; a container with a fixed address is reached by a peer
on h3, is removed from h1 and started again on h2 (or on h1 with another MAC),
and the peer reaches it within 2 s, though the moved container only runs
`sleep` and sends nothing itself. The plugin's announcements after Join do
it; with --no-announce the peer's VXLAN and ARP cache stay as they were.
With --probe-duplicates, an address another host holds fails docker run.

Every host allocates from the whole subnet (no --ip-range) and every
container here has a fixed address, so the addresses are valid on every
engine and never collide."""

import contextlib
import json

import pytest

import demo  # scripts/demo.py
from lab import IMAGE  # scripts/lab.py
from tests.wait import wait_for

SUBNET, SUBNET6 = "10.61.0.0/24", "fd61::/64"
ADDRESS, ADDRESS6 = "10.61.0.50", "fd61::50"  # the container that moves
PEER, PEER6 = "10.61.0.30", "fd61::30"  # the peer on h3
GROUP = "239.1.61.1"
REACHED_WITHIN = 2  # seconds: ping's deadline


@pytest.fixture(scope="module")
def hosts(lab3):
    for host in lab3.hosts:
        host.start_plugin(["--vtepdev", "eth0"])
    return lab3.hosts


@contextlib.contextmanager
def plugins_started_with(hosts, *flags):
    """The plugins restarted with FLAGS, and back to the default after."""
    for host in hosts:
        host.stop_plugin()
        host.start_plugin(["--vtepdev", "eth0", *flags])
    try:
        yield hosts
    finally:
        for host in hosts:
            host.stop_plugin()
            host.start_plugin(["--vtepdev", "eth0"])


@pytest.fixture
def hosts_without_announcements(hosts):
    with plugins_started_with(hosts, "--no-announce"):
        yield hosts


def group(host):
    return {"VxlanId": 61, "Group": GROUP}


def peers(host):
    return {"VxlanId": 61, "Peers": demo.peers_of(host)}


def start(host, name, *args):
    """A container that only sleeps; its MAC on network mv."""
    demo.run_container(host, name, "mv", *args)
    return demo.network_field(host, name, "mv", "MacAddress")


def ping(host, container, address, deadline):
    """Pings from container until the first answer, for at most DEADLINE seconds."""
    return host.docker("exec", container, "ping", "-c", 1, "-w", deadline, address,
                       check=False)


def vtep_of(host, mac):
    """Where host's vxlan of network mv sends frames for MAC (the VTEP it learned)."""
    network_id = host.docker("network", "inspect", "-f", "{{.Id}}", "mv").stdout.strip()
    fdb = json.loads(host.run_in_ns(["bridge", "-j", "fdb", "show", "dev",
                                     "vx_" + network_id[:12]]).stdout)
    return next((entry.get("dst") for entry in fdb if entry["mac"] == mac), None)


def neighbour(host, container, address):
    """The MAC that container's ARP/ND cache holds for address (iproute2's ip
    in the container's network namespace)."""
    pid = host.docker("inspect", "-f", "{{.State.Pid}}", container).stdout.strip()
    found = json.loads(host.run_in_ns(["nsenter", "-t", pid, "-n", "ip", "-j", "neigh", "show",
                                       address]).stdout or "[]")
    return found[0].get("lladdr") if found else None


def peer_knows(h3, address, mac, vtep):
    """The peer on h3 has just reached ADDRESS: its cache holds MAC, and h3's
    vxlan sends MAC to VTEP."""
    res = ping(h3, "peer", address, REACHED_WITHIN)
    assert res.returncode == 0, res.stdout + res.stderr
    assert neighbour(h3, "peer", address) == mac
    assert vtep_of(h3, mac) == vtep


def assert_reached_at_once(h3, address, mac, vtep):
    """What the announcement did: before the peer sends anything, h3's vxlan
    and the peer's cache already point at the container; then a ping answers."""
    wait_for(lambda: vtep_of(h3, mac) == vtep and neighbour(h3, "peer", address) == mac,
             seconds=REACHED_WITHIN, what=f"h3 to learn that {mac} is behind {vtep}")
    res = ping(h3, "peer", address, REACHED_WITHIN)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("options", [group, peers], ids=["group", "peers"])
def test_moved_container_is_reached_at_once(hosts, options):
    h1, h2, h3 = hosts
    with demo.network(hosts, "mv", SUBNET, options, split=False):
        mac = start(h1, "mover", "--ip", ADDRESS)
        start(h3, "peer", "--ip", PEER)
        peer_knows(h3, ADDRESS, mac, h1.underlay_ip)
        h1.docker("rm", "-f", "mover")
        assert start(h2, "mover", "--ip", ADDRESS) == mac  # the MAC follows the address
        assert_reached_at_once(h3, ADDRESS, mac, h2.underlay_ip)
        # its result is logged once the last round is out, 1 s after the Join
        vxlan = "vx_" + h2.docker("network", "inspect", "-f", "{{.Id}}", "mv").stdout[:12]
        [announced] = wait_for(lambda: [r for r in h2.audit_records() if r["event"] == "result"
                                        and r["cmd"].startswith(f"announce {ADDRESS} from {mac} "
                                                                f"on {vxlan} ")],
                               what="the announcement's result on h2")
        assert announced["status"] == "ok" and "note" not in announced, announced


def test_moved_container_with_a_fixed_ipv6_address_is_reached_at_once(hosts):
    # IPv4 is not kept here, so the MAC (chosen from the IPv4 address) changes:
    # the peer's ND entry is stale as well as h3's VTEP for the new MAC
    h1, h2, h3 = hosts
    with demo.network(hosts, "mv", SUBNET, group, "--ipv6", "--subnet", SUBNET6, split=False):
        old_mac = start(h1, "mover", "--ip", "10.61.0.51", "--ip6", ADDRESS6)
        start(h3, "peer", "--ip", PEER, "--ip6", PEER6)
        peer_knows(h3, ADDRESS6, old_mac, h1.underlay_ip)
        h1.docker("rm", "-f", "mover")
        mac = start(h2, "mover", "--ip", "10.61.0.52", "--ip6", ADDRESS6)
        assert mac != old_mac
        assert_reached_at_once(h3, ADDRESS6, mac, h2.underlay_ip)


def test_restart_with_a_new_mac_replaces_the_peers_arp_entry(hosts):
    h1, h2, h3 = hosts
    with demo.network(hosts, "mv", SUBNET, group, split=False):
        start(h1, "mover", "--ip", ADDRESS, "--mac-address", "02:61:00:00:00:01")
        start(h3, "peer", "--ip", PEER)
        peer_knows(h3, ADDRESS, "02:61:00:00:00:01", h1.underlay_ip)
        h1.docker("rm", "-f", "mover")
        start(h1, "mover", "--ip", ADDRESS, "--mac-address", "02:61:00:00:00:02")
        assert_reached_at_once(h3, ADDRESS, "02:61:00:00:00:02", h1.underlay_ip)


@pytest.mark.parametrize("new_mac", [None, "02:61:00:00:00:02"], ids=["move", "new-mac"])
def test_without_announcements_the_peer_keeps_the_stale_entries(hosts_without_announcements,
                                                                 new_mac):
    """The old behaviour, with --no-announce: the peer's ping goes where its
    vxlan and ARP cache say, and is lost. Linux only doubts an entry 5 s
    (delay_first_probe_time) after it was first used unanswered, so the 2 s
    of ping cannot see the container, however fast or slow the machine."""
    h1, h2, h3 = hosts_without_announcements
    logged = {host: len(host.audit_records()) for host in hosts_without_announcements}
    with demo.network(hosts_without_announcements, "mv", SUBNET, group, split=False):
        old_mac = start(h1, "mover", "--ip", ADDRESS, "--mac-address", "02:61:00:00:00:01")
        start(h3, "peer", "--ip", PEER)
        peer_knows(h3, ADDRESS, old_mac, h1.underlay_ip)
        h1.docker("rm", "-f", "mover")
        target = h1 if new_mac else h2
        start(target, "mover", "--ip", ADDRESS, "--mac-address", new_mac or old_mac)
        res = ping(h3, "peer", ADDRESS, REACHED_WITHIN)
        assert res.returncode != 0 and "100% packet loss" in res.stdout, res.stdout
        assert neighbour(h3, "peer", ADDRESS) == old_mac
        assert vtep_of(h3, old_mac) == h1.underlay_ip
        assert not [r for r in target.audit_records()[logged[target]:]
                    if r["cmd"].startswith("announce ")]


def test_an_address_another_host_holds_fails_docker_run(hosts):
    h1, h2, h3 = hosts
    with plugins_started_with(hosts, "--probe-duplicates", "0.2", "--vxlan-linger", "0"), \
            demo.network(hosts, "mv", SUBNET, group, split=False):
        # no --ip-range: each host's IPAM hands out the subnet's first address
        mac = start(h1, "first")
        address = demo.network_field(h1, "first", "mv")
        refused = h2.docker("run", "-d", "--name", "second", "--net", "mv", IMAGE,
                            "sleep", "1d", check=False)
        assert refused.returncode != 0
        assert (f"address {address} is already in use on this VXLAN: {mac} answered for it, "
                f"behind VTEP {h1.underlay_ip}") in refused.stderr, refused.stderr
        assert demo.plugin_links(h2) == []  # the failed Join left nothing
        start(h2, "third", "--ip", ADDRESS)  # a free address still joins
