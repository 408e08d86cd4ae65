"""The test lab itself (scripts/lab.py): hosts come up, see each other on
the underlay, run containers, and leave nothing behind."""

import os

import pytest

import lab as lablib


@pytest.fixture
def root():
    if os.geteuid() != 0:
        pytest.skip("a lab of Docker hosts needs root")


def test_two_hosts_come_up_and_are_torn_down(root):
    lab = lablib.Lab(2, image=False)
    with lab:
        h1, h2 = lab.hosts
        namespaces = {h1.netns, h2.netns, lab.switch_ns}
        assert namespaces <= set(lablib._netns_list())
        assert len({h.netns for h in lab.hosts}) == 2
        for h in lab.hosts:
            info = h.docker("info", "--format", "{{.Name}} {{.ID}}").stdout.split()
            assert info[0] == h.name
        # the underlay, both ways, IPv4 and IPv6, pinged inside the host namespaces
        h1.ping(h2.underlay_ip)
        h2.ping(h1.underlay_ip)
        h1.ping(h2.underlay_ip6)
        # each host sees only its own eth0 and lo
        names = {link["ifname"] for link in h1.links()}
        assert names == {"lo", "eth0"}
        mnt_ids = {h.mnt_ns for h in lab.hosts}
        processes = lablib._family(mnt_ids, set())
        assert {h.dockerd_pid for h in lab.hosts} <= {pid for pid, _ in processes}
        lab_dir, record = lab.dir, lab.record
        assert record.exists()
    assert not namespaces & set(lablib._netns_list())
    assert not [p for p in processes if lablib.alive(*p)]
    assert not os.path.exists(lab_dir)
    assert not record.exists()
    lab.down()  # a second down does nothing


def test_containers_reach_each_other_over_a_vxlan(lab2):
    """Docker's own macvlan driver on a hand-made multicast vxlan parent: the
    baseline the plugin is compared with."""
    h1, h2 = lab2.hosts
    try:
        for i, h in enumerate(lab2.hosts):
            h.run_in_ns("ip link add vxt type vxlan id 77 group 239.1.1.77 dev eth0 "
                        "dstport 4789 && ip link set vxt up")
            h.docker("network", "create", "-d", "macvlan", "-o", "parent=vxt",
                     "--subnet", "10.77.0.0/24", "--ip-range", f"10.77.0.{128 * i}/25", "net77")
        h2.docker("run", "-d", "--name", "c2", "--net", "net77", "--ip", "10.77.0.133",
                  lablib.IMAGE, "sleep", "60")
        out = h1.docker("run", "--rm", "--net", "net77", lablib.IMAGE,
                        "ping", "-c", "2", "-W", "2", "10.77.0.133").stdout
        assert " 0% packet loss" in out
    finally:
        for h in lab2.hosts:
            h.docker("rm", "-f", "c2", check=False)
            h.docker("network", "rm", "net77", check=False)
            h.run_in_ns("ip link del vxt", check=False)


def test_busybox_image_has_true_and_tmp(lab1):
    (h,) = lab1.hosts
    h.docker("run", "--rm", "--net", "none", lablib.IMAGE, "true")
    out = h.docker("run", "--rm", "--net", "none", lablib.IMAGE,
                   "sh", "-c", "test -d /tmp && hostname && echo ok").stdout
    assert out.split()[-1] == "ok"
    assert h.run_in_ns("hostname").stdout.strip() == "h1"
