"""Containers on different hosts talk over one VXLAN: two Docker hosts of the
lab, the plugin on each, every network created on both with the same VxlanId
and a slice of one subnet per host (the helpers are scripts/demo.py's)."""

import ipaddress
import os

import pytest

import demo  # scripts/demo.py

SUBNET = "10.42.0.0/24"
GROUP = "239.1.42.1"


@pytest.fixture(scope="module")
def hosts(lab2):
    for host in lab2.hosts:
        host.start_plugin(["--vtepdev", "eth0"])
    return lab2.hosts


def group_options(vni):
    return lambda host: {"VxlanId": vni, "Group": GROUP}


def peers_options(vni, family=4):
    return lambda host: {"VxlanId": vni, "Peers": demo.peers_of(host, family)}


def one_container_each(hosts, net):
    """[(host, container, address)]: a container on net on every host."""
    return [(host, f"c{host.index}", demo.run_container(host, f"c{host.index}", net))
            for host in hosts]


def assert_ping(host, container, address):
    res = demo.ping(host, container, address)
    assert res.returncode == 0 and " 0% packet loss" in res.stdout, res.stdout + res.stderr


def container_mtu(host, container):
    return int(host.docker("exec", container, "cat", "/sys/class/net/eth0/mtu").stdout)


def df_ping(host, container, address, size):
    """iputils ping with don't-fragment and SIZE bytes of payload, in the
    container's network namespace (busybox ping cannot forbid fragments)."""
    pid = host.docker("inspect", "-f", "{{.State.Pid}}", container).stdout.strip()
    return host.run_in_ns(["nsenter", "-t", pid, "-n", "ping", "-M", "do", "-c", "1",
                           "-W", "2", "-s", size, address], check=False)


def wait_listening(host, container, port, tries=100):
    for _ in range(tries):
        listening = host.docker("exec", container, "netstat", "-ltn").stdout
        if f":{port} " in listening:
            return
    raise AssertionError(f"nothing listens on port {port} in {container}:\n{listening}")


def eth0_mtu(host):
    return next(link["mtu"] for link in host.links() if link["ifname"] == "eth0")


@pytest.fixture(scope="class")
def pair(hosts):
    """A multicast network on both hosts, a container on each: [(host, container, address)]."""
    with demo.network(hosts, "grp", SUBNET, group_options(42)):
        yield one_container_each(hosts, "grp")


class TestOneGroupNetwork:
    """Tests that share the `pair`, which goes after the last of them."""

    def test_containers_ping_each_other_across_hosts(self, pair):
        (h1, c1, a1), (h2, c2, a2) = pair
        assert_ping(h1, c1, a2)
        assert_ping(h2, c2, a1)

    def test_tcp_carries_data_both_ways(self, pair):
        (h1, c1, a1), (h2, c2, a2) = pair
        # Each side sends its own random bytes, then reads exactly the other's
        # count (head -c): no side depends on the other closing first.
        sizes = {c1: 200000, c2: 300000}
        for host, container, _ in pair:
            host.docker("exec", container, "sh", "-c",
                        f"head -c {sizes[container]} /dev/urandom > /tmp/out")
        h2.docker("exec", "-d", c2, "nc", "-l", "-p", "5000", "-e", "sh", "-c",
                  f"head -c {sizes[c1]} > /tmp/in; cat /tmp/out")
        wait_listening(h2, c2, 5000)
        h1.docker("exec", c1, "nc", a2, "5000", "-e", "sh", "-c",
                  f"cat /tmp/out; head -c {sizes[c2]} > /tmp/in", timeout=60)
        sums = {container: dict(reversed(line.split()) for line in host.docker(
                    "exec", container, "md5sum", "/tmp/in", "/tmp/out").stdout.splitlines())
                for host, container, _ in pair}
        assert sums[c1]["/tmp/in"] == sums[c2]["/tmp/out"]
        assert sums[c2]["/tmp/in"] == sums[c1]["/tmp/out"]

    def test_full_mtu_crosses_hosts_and_one_byte_more_is_refused(self, pair):
        (h1, c1, a1), (h2, c2, a2) = pair
        mtu = container_mtu(h1, c1)
        assert mtu == eth0_mtu(h1) - 50  # the kernel's default: VXLAN over IPv4 costs 50 bytes
        full = mtu - 28  # IPv4 and ICMP headers
        res = df_ping(h1, c1, a2, full)
        assert res.returncode == 0 and " 0% packet loss" in res.stdout, res.stdout + res.stderr
        res = df_ping(h1, c1, a2, full + 1)
        assert res.returncode != 0
        assert "message too long" in res.stderr, res.stdout + res.stderr  # refused at once


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4-underlay", "ipv6-underlay"])
def test_peers_network_connects_hosts_without_multicast(hosts, family):
    # IPv6 peers need the vxlan made as IPv6 (`local ::`): without it the
    # kernel refuses them and `docker run` fails at Join
    with demo.network(hosts, "peers", SUBNET, peers_options(43, family)):
        (h1, c1, a1), (h2, c2, a2) = one_container_each(hosts, "peers")
        assert_ping(h1, c1, a2)
        assert_ping(h2, c2, a1)
        overhead = {4: 50, 6: 70}[family]
        assert container_mtu(h1, c1) == eth0_mtu(h1) - overhead
        res = df_ping(h2, c2, a1, eth0_mtu(h2) - overhead - 28)
        assert res.returncode == 0, res.stdout + res.stderr


def test_different_vxlan_ids_on_one_subnet_do_not_reach_each_other(hosts):
    # One host refuses two networks on one subnet, so A is on h1 and B on h2;
    # both flood to the same group, so only the VNI keeps them apart.
    h1, h2 = hosts
    with demo.network([h1], "neta", SUBNET, group_options(101)):
        a1 = demo.run_container(h1, "a1", "neta")
        with demo.network([h2], "netb", SUBNET, group_options(102)):
            b2 = demo.run_container(h2, "b2", "netb")
            res = demo.ping(h1, "a1", b2)
            assert res.returncode != 0 and "100% packet loss" in res.stdout, res.stdout
            res = demo.ping(h2, "b2", a1)
            assert res.returncode != 0 and "100% packet loss" in res.stdout, res.stdout
        # the same address on h2, now on VNI 101 like a1: reached
        with demo.network([h2], "neta", SUBNET, group_options(101)):
            demo.run_container(h2, "a2", "neta", "--ip", b2)
            assert_ping(h1, "a1", b2)


def test_per_host_ip_ranges_give_disjoint_addresses(hosts):
    with demo.network(hosts, "addr", SUBNET, group_options(44)):
        addresses = {host: [demo.run_container(host, f"n{host.index}{i}", "addr")
                            for i in range(3)]
                     for host in hosts}
    h1, h2 = hosts
    assert len(set(addresses[h1])) == len(set(addresses[h2])) == 3
    assert not set(addresses[h1]) & set(addresses[h2])
    for host in hosts:
        slice_ = ipaddress.ip_network(demo.ip_range(host, SUBNET))
        assert all(ipaddress.ip_address(a) in slice_ for a in addresses[host])
    # without --ip-range each host's IPAM starts at the same address
    with demo.network(hosts, "dup", SUBNET, group_options(45), split=False):
        first = {demo.run_container(host, f"d{host.index}", "dup") for host in hosts}
    assert len(first) == 1


def test_removing_containers_and_networks_leaves_nothing_on_the_hosts(hosts):
    """Runs after the tests above: they and this one must all have cleaned up."""
    with demo.network(hosts, "gone", SUBNET, peers_options(46)):
        for host in hosts:
            for i in range(2):
                demo.run_container(host, f"g{host.index}{i}", "gone")
        for host in hosts:  # the macvlans are inside the containers
            network_id = host.docker("network", "inspect", "-f", "{{.Id}}", "gone").stdout
            assert demo.plugin_links(host) == ["vx_" + network_id[:12]]
        demo.remove_network(hosts[0], "gone")
        demo.remove_network(hosts[1], "gone")
        for host in hosts:
            assert demo.plugin_links(host) == []
            assert host.docker("ps", "-aq").stdout.split() == []
            assert host.docker("network", "ls", "-q", "--filter", "driver=vxlan").stdout == ""
            state = {kind: os.listdir(os.path.join(host.plugin_state_dir, kind))
                     for kind in ("networks", "endpoints")}
            assert state == {"networks": [], "endpoints": []}
