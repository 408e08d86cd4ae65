"""The plugin's records lost, damaged or unusable under running containers, on
a real Docker engine: running containers keep their network through a restart
of the plugin, new ones join the same network afterwards, and only what Docker
no longer has is removed. (The hosts and helpers are test_robustness.py's.)"""

import json
import os
import signal

import pytest

from demo import network_field, plugin_links  # scripts/demo.py
from lab import IMAGE  # scripts/lab.py
from tests.e2e.test_robustness import (PLUGIN_ARGS, create_network, hosts,  # noqa: F401
                                       ping, run, vxlans, wait_for_reconcile)
from tests.state_damage import corrupted, emptied, removed
from tests.wait import wait_for


def restart_plugin(host, args=PLUGIN_ARGS, damage=None):
    """Kills the plugin, calls damage(state dir), starts it with ARGS and waits
    until it has reconciled with Docker; returns its log from that start on."""
    host.stop_plugin(signal.SIGKILL)
    if damage:
        damage(host.plugin_state_dir)
    reconciled = host.plugin_log().count("reconciled:")
    before = len(host.plugin_log())
    host.start_plugin(args)
    wait_for_reconcile(host, reconciled)
    return host.plugin_log()[before:]


def state_files(host, kind):
    return sorted(os.listdir(os.path.join(host.plugin_state_dir, kind)))


@pytest.mark.parametrize("damage", [removed, emptied, corrupted])
def test_lost_state_keeps_running_containers_connected(hosts, damage):
    h1, h2 = hosts
    name = f"ls-{damage.__name__}"
    network_id = create_network(hosts, name, 91, "10.91.0")
    remote = run(h2, f"{name}-b", name)
    a1 = run(h1, f"{name}-a1", name)
    run(h1, f"{name}-a2", name)
    vxlan = "vx_" + network_id[:12]

    new_log = restart_plugin(h1, damage=damage)
    assert "Traceback" not in new_log
    assert vxlans(h1) == [vxlan]
    ping(h1, f"{name}-a1", remote)
    ping(h1, f"{name}-a2", a1)
    ping(h2, f"{name}-b", a1)
    # the records were made again from Docker's
    endpoints = {network_field(h1, f"{name}-{c}", name, "EndpointID") for c in ("a1", "a2")}
    assert network_id + ".json" in state_files(h1, "networks")
    assert {e + ".json" for e in endpoints} <= set(state_files(h1, "endpoints"))

    # a new container joins the same vxlan
    run(h1, f"{name}-a3", name)
    ping(h1, f"{name}-a3", remote)
    assert vxlans(h1) == [vxlan]
    # removing containers from before the restart: the vxlan goes with the last
    h1.docker("rm", "-f", f"{name}-a1", f"{name}-a2")
    ping(h1, f"{name}-a3", remote)
    h1.docker("rm", "-f", f"{name}-a3")
    assert plugin_links(h1) == []
    if damage is corrupted:  # stray files are left where they were
        assert "notes.txt" in state_files(h1, "networks")


def test_a_record_that_no_longer_validates_leaves_its_links_alone(hosts):
    h1, h2 = hosts
    network_id = create_network(hosts, "ls-group", 92, "10.92.0")  # Group: needs -vtepdev
    remote = run(h2, "ls-group-b", "ls-group")
    run(h1, "ls-group-a", "ls-group")
    try:
        new_log = restart_plugin(h1, args=[])  # -vtepdev forgotten
        assert f"network {network_id[:12]}: option Group=239.1.2.92 needs a VTEP device" \
            in new_log
        assert vxlans(h1) == ["vx_" + network_id[:12]]
        ping(h1, "ls-group-a", remote)
        started = h1.docker("run", "--rm", "--net", "ls-group", IMAGE, "true", check=False)
        assert started.returncode != 0
        assert f"network {network_id[:12]}: option Group=239.1.2.92" in started.stderr
    finally:
        restart_plugin(h1)
    run(h1, "ls-group-c", "ls-group")
    ping(h1, "ls-group-c", remote)
    h1.docker("rm", "-f", "ls-group-a", "ls-group-c")
    # after DeleteEndpoint's answer: the macvlans, then the vxlan after the last
    wait_for(lambda: plugin_links(h1) == [], 10, "the links deleted")


def test_a_record_of_a_newer_format_is_refused_not_dropped(hosts):
    h1, h2 = hosts
    network_id = create_network(hosts, "ls-newer", 93, "10.93.0")
    remote = run(h2, "ls-newer-b", "ls-newer")
    run(h1, "ls-newer-a", "ls-newer")
    record = os.path.join(h1.plugin_state_dir, "networks", network_id + ".json")

    def newer(state_dir):
        with open(record) as f:
            written = json.load(f)
        with open(record, "w") as f:
            json.dump({**written, "format": 2, "later": True}, f)

    new_log = restart_plugin(h1, damage=newer)
    assert "record format 2" in new_log
    ping(h1, "ls-newer-a", remote)
    started = h1.docker("run", "--rm", "--net", "ls-newer", IMAGE, "true", check=False)
    assert started.returncode != 0 and "newer docker-vxlan-plugin" in started.stderr
    with open(record) as f:
        assert json.load(f)["later"] is True  # kept as it was

    # what the message advises: remove the file, and the record comes from Docker
    restart_plugin(h1, damage=lambda state_dir: os.unlink(record))
    run(h1, "ls-newer-c", "ls-newer")
    ping(h1, "ls-newer-c", remote)
    h1.docker("rm", "-f", "ls-newer-a", "ls-newer-c")
    # after DeleteEndpoint's answer: the macvlans, then the vxlan after the last
    wait_for(lambda: plugin_links(h1) == [], 10, "the links deleted")


def test_only_links_of_networks_docker_no_longer_has_are_removed(hosts):
    h1 = hosts[0]
    gone, kept = "f" * 64, create_network([h1], "ls-kept", 94, "10.94.0")
    run(h1, "ls-kept-a", "ls-kept")
    for name, owner, vni in (("vxgone", gone, "95"), ("vxadmin", None, "96")):
        h1.run_in_ns(["ip", "link", "add", name, "type", "vxlan", "id", vni, "dstport", "4789"])
        if owner:
            h1.run_in_ns(["ip", "link", "set", "dev", name, "alias",
                          "docker-vxlan-plugin:" + owner])
    try:
        restart_plugin(h1, damage=emptied)
        assert vxlans(h1) == sorted(["vx_" + kept[:12], "vxadmin"])
        assert any(r["cmd"] == "ip link delete dev vxgone" and r.get("status") == "ok"
                   for r in h1.audit_records())
    finally:
        h1.run_in_ns(["ip", "link", "delete", "dev", "vxadmin"], check=False)
        h1.run_in_ns(["ip", "link", "delete", "dev", "vxgone"], check=False)


def default_route(host, container):
    routes = host.docker("exec", container, "ip", "route").stdout.splitlines()
    return [route.split() for route in routes if route.startswith("default")]


def test_a_gateway_docker_chose_is_kept_when_the_record_is_made_again(hosts):
    # Without --gateway, Docker's IPAM picks one and hands it to CreateNetwork,
    # but `docker network inspect` does not show it; the containers have it.
    h1 = hosts[0]
    h1.docker("network", "create", "-d", "vxlan", "-o", "VxlanId=97", "--subnet",
              "10.97.0.0/24", "--ip-range", "10.97.0.128/25", "ls-gw")
    run(h1, "ls-gw-a", "ls-gw")
    before = default_route(h1, "ls-gw-a")
    assert before == [["default", "via", "10.97.0.128", "dev", "eth0"]]
    restart_plugin(h1, damage=removed)
    run(h1, "ls-gw-b", "ls-gw")
    assert default_route(h1, "ls-gw-b") == before
