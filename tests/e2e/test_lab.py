"""The test lab itself (scripts/lab.py): hosts come up, see each other on
the underlay, run containers, and leave nothing behind."""

import os
import shutil

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


def test_a_host_on_another_engine_runs_it_from_its_cached_root(root):
    """Debian 13's Engine 26 in a lab host: containers see their own root
    (also under `docker exec`, which a chroot would send to this machine's),
    and the lab leaves the cached root as it found it."""
    cached = lablib.engine_root("trixie")
    built = (cached.parent / f"{cached.name}.recipe").stat().st_mtime
    lab = lablib.Lab(1, engine="trixie")
    with lab:
        (h,) = lab.hosts
        assert h.server_version.startswith("26.")
        assert h.docker("version", "--format", "{{.Client.Version}}").stdout.startswith("26.")
        h.docker("run", "-d", "--name", "inside", "--net", "none", lablib.IMAGE, "sleep", "60")
        listing = h.docker("exec", "inside", "sh", "-c", "ls /sys/class/net; ls /").stdout
        assert listing.split() == ["lo", "bin", "dev", "etc", "proc", "root", "sys", "tmp",
                                   "var"]
        # the plugin's side: this machine's Python in the host's network namespace
        plugin = h.start_plugin(["--vtepdev", "eth0"])
        assert os.readlink(f"/proc/{plugin.pid}/ns/net") == os.readlink(
            f"/proc/{h.dockerd_pid}/ns/net")
        assert os.path.exists(f"/proc/{h.dockerd_pid}/root{lablib.PLUGIN_SOCKET}")
        pids = [h.dockerd_pid, plugin.pid]
    assert not any(lablib.alive(pid) for pid in pids)
    changed = [str(p) for p in cached.rglob("*") if p.lstat().st_mtime > built]
    assert changed == []


def test_a_debian_root_is_made_once_and_again_when_missing(root, tmp_path):
    """debian_root's cache, with a package added to a copy of the cached
    minbase root (a fresh debootstrap would take a minute)."""
    minbase = lablib.debian_root("trixie")
    lablib.run(["cp", "-a", str(minbase), str(tmp_path / "trixie")])
    shutil.copy(minbase.parent / "trixie.recipe", tmp_path)
    made = lablib.debian_root("trixie", ["busybox-static"], "bb", cache=tmp_path)
    assert made == tmp_path / "bb" and (made / "bin" / "busybox").exists()
    (made / "marker").touch()
    assert lablib.debian_root("trixie", ["busybox-static"], "bb", cache=tmp_path) == made
    assert (made / "marker").exists()              # kept, not made again
    shutil.rmtree(made)
    assert lablib.debian_root("trixie", ["busybox-static"], "bb", cache=tmp_path) == made
    assert (made / "bin" / "busybox").exists() and not (made / "marker").exists()
