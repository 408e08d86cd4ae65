"""Underlays as fleets have them, on two lab hosts: ip_nonlocal_bind set (as on
keepalived and HAProxy hosts), an underlay MTU below 1500 with no VTEP device
given, and vxlans the Go original left behind on its UDP port 8472. The plugin
runs without -vtepdev here."""

import contextlib
import shutil

import pytest

import demo  # scripts/demo.py
from tests.e2e.test_multihost import assert_ping, container_mtu, df_ping

SUBNET = "10.88.0.0/24"


@pytest.fixture(scope="module")
def hosts(lab2):
    for host in lab2.hosts:
        host.start_plugin()
    return lab2.hosts


@contextlib.contextmanager
def set_on_hosts(hosts, apply, undo):
    """apply(host) on every host; undo(host) afterwards, whatever happened."""
    try:
        for host in hosts:
            apply(host)
        yield
    finally:
        for host in hosts:
            undo(host)


def sysctls(values):
    return lambda host: host.run_in_ns(["sysctl", "-qw"] + [f"{k}={v}" for k, v in values])


def every_host(host):
    """The Peers option of a fleet that gives every host the same list."""
    return ",".join(h.underlay_ip for h in host.lab.hosts)


def test_peers_work_on_hosts_with_nonlocal_bind(hosts):
    names = ("net.ipv4.ip_nonlocal_bind", "net.ipv6.ip_nonlocal_bind")
    with set_on_hosts(hosts, sysctls([(name, 1) for name in names]),
                      sysctls([(name, 0) for name in names])):
        with demo.network(hosts, "nlb", SUBNET,
                          lambda host: {"VxlanId": 87, "Peers": every_host(host)}):
            (h1, c1, a1), (h2, c2, a2) = [
                (host, f"nlb{host.index}", demo.run_container(host, f"nlb{host.index}", "nlb"))
                for host in hosts]
            assert_ping(h1, c1, a2)
            assert_ping(h2, c2, a1)


def mtu(value):
    return lambda host: host.run_in_ns(["ip", "link", "set", "dev", "eth0", "mtu", str(value)])


def test_peers_without_a_vtep_device_get_the_underlays_mtu(hosts):
    with set_on_hosts(hosts, mtu(1400), mtu(1500)):
        with demo.network(hosts, "mtu", SUBNET,
                          lambda host: {"VxlanId": 86, "Peers": demo.peers_of(host)}):
            (h1, c1, a1), (h2, c2, a2) = [
                (host, f"mtu{host.index}", demo.run_container(host, f"mtu{host.index}", "mtu"))
                for host in hosts]
            assert container_mtu(h1, c1) == container_mtu(h2, c2) == 1400 - 50
            full = 1400 - 50 - 28  # IPv4 and ICMP headers
            res = df_ping(h1, c1, a2, full)
            assert res.returncode == 0 and " 0% packet loss" in res.stdout, res.stdout + res.stderr
            res = df_ping(h1, c1, a2, full + 1)
            assert res.returncode != 0 and "message too long" in res.stderr, res.stdout + res.stderr


def test_the_go_originals_vxlan_keeps_its_port_8472(hosts):
    """h1 moves over from the Go original: its network has no Port and its
    vx_ link, made by the original, is on the kernel's 8472; h2 still runs the
    original (here: the plugin with -o Port=8472). The link is adopted with its
    port, and made again on it after its last container is gone. Another of
    the original's networks, which no container joins again, is removed with
    its link."""
    h1, h2 = hosts
    group = {"VxlanId": 85, "Group": "239.1.2.85", "VtepDev": "eth0"}
    options = {h1: group, h2: {**group, "Port": 8472}}
    idle = {"VxlanId": 86, "Group": "239.1.2.86", "VtepDev": "eth0"}
    with demo.network(hosts, "orig", SUBNET, options.get), \
            demo.network([h1], "idle", "10.89.0.0/24", lambda host: idle):
        network_id, idle_id = (h1.docker("network", "inspect", "-f", "{{.Id}}", name)
                               .stdout.strip() for name in ("orig", "idle"))
        vxlan, idle_vxlan = "vx_" + network_id[:12], "vx_" + idle_id[:12]
        # the original kept no records; its links have no mark
        h1.stop_plugin()
        shutil.rmtree(h1.plugin_state_dir)
        for name, vni, group_address in ((vxlan, "85", "239.1.2.85"),
                                         (idle_vxlan, "86", "239.1.2.86")):
            h1.run_in_ns(["ip", "link", "add", name, "type", "vxlan", "id", vni,
                          "group", group_address, "dev", "eth0", "dstport", "8472"])
            h1.run_in_ns(["ip", "link", "set", "dev", name, "up"])
        h1.start_plugin(["--vxlan-linger", "0"])  # the vxlan goes with its last container
        h1.docker("network", "rm", "idle")
        assert idle_vxlan not in demo.plugin_links(h1)
        remote = demo.run_container(h2, "orig2", "orig")
        demo.run_container(h1, "orig1", "orig")
        assert_ping(h1, "orig1", remote)
        assert port_of(h1, vxlan) == 8472

        h1.docker("rm", "-f", "orig1")
        assert vxlan not in demo.plugin_links(h1)
        demo.run_container(h1, "orig3", "orig")
        assert port_of(h1, vxlan) == 8472
        assert_ping(h1, "orig3", remote)


def port_of(host, name):
    link = next(link for link in host.links() if link["ifname"] == name)
    return link["linkinfo"]["info_data"]["port"]
