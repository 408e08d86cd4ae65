"""Restarts: the plugin killed and started again keeps its networks, adopts the
Go original's links, and deletes nothing while Docker has not answered (these
plugins have no Docker: tests/e2e/test_lost_state.py has the real engine)."""

import json
import os
import shutil
import signal
import sys
import threading

import pytest

from tests.kernel.conftest import (Plugin, create_and_join, endpoint_request, join,
                                   network_request, new_id)
from tests.state_damage import corrupted, emptied, removed
from tests.wait import wait_for


def restart(plugin):
    """Starts the plugin again; returns its log from then on, as a function."""
    before = len(plugin.log())
    plugin.start()
    return lambda: plugin.log()[before:]


def docker_did_not_answer(new_log):
    wait_for(lambda: "Docker did not answer" in new_log(), 20,
             "the plugin to find that Docker does not answer")
    assert "reconciled" not in new_log()


def reconciled_or_waiting(new_log):
    wait_for(lambda: "Docker did not answer" in new_log() or "reconciled" in new_log(), 20,
             "the plugin to have reconciled, or found that Docker does not answer")


def deleted(plugin):
    return [r["cmd"] for r in plugin.audit()
            if r["event"] == "run" and r["cmd"].startswith("ip link delete")]


def test_sigkill_and_restart_keeps_networks_and_endpoints(plugin, netns):
    network_id, first, _, _ = create_and_join(plugin, {"VxlanId": "30"})
    vxlan = "vx_" + network_id[:12]
    plugin.stop(signal.SIGKILL)
    plugin.start()
    # a new endpoint joins the existing vxlan: no second vxlan, no error
    second = new_id()
    plugin.ok("CreateEndpoint", endpoint_request(network_id, second, "10.42.0.3/24"))
    join(plugin, network_id, second)
    assert {vxlan, "macvlan_" + first[:7], "macvlan_" + second[:7]} <= netns.link_names()
    for endpoint in (first, second):
        plugin.delete_endpoint(network_id, endpoint)
    assert netns.link_names() == {"lo", "eth0", vxlan}  # it lingers for the next container
    plugin.ok("DeleteNetwork", {"NetworkID": network_id})
    assert netns.link_names() == {"lo", "eth0"}


def test_no_link_is_deleted_at_start_before_docker_answers(plugin, netns):
    network_id, endpoint_id, _, _ = create_and_join(plugin, {"VxlanId": "31"})
    plugin.stop(signal.SIGKILL)
    # a vxlan of ours whose network the state does not have (Docker may: only
    # it can say the network is gone), and one an admin made, which is not ours
    netns.ip("link", "add", "vxorphan", "type", "vxlan", "id", "32", "dstport", "4789")
    netns.ip("link", "set", "dev", "vxorphan", "alias", "docker-vxlan-plugin:" + new_id())
    netns.ip("link", "add", "vxadmin", "type", "vxlan", "id", "33", "dstport", "4789")
    docker_did_not_answer(restart(plugin))
    assert {"vxorphan", "vxadmin", "vx_" + network_id[:12]} <= netns.link_names()
    assert deleted(plugin) == []


@pytest.mark.parametrize("damage", [removed, emptied, corrupted])
def test_lost_or_unreadable_state_keeps_every_link(plugin, netns, damage):
    network_id, first, _, _ = create_and_join(plugin, {"VxlanId": "36", "Peers": "192.0.2.2"})
    second = new_id()
    plugin.ok("CreateEndpoint", endpoint_request(network_id, second, "10.42.0.3/24"))
    join(plugin, network_id, second)
    links = {"vx_" + network_id[:12], "macvlan_" + first[:7], "macvlan_" + second[:7]}
    plugin.stop(signal.SIGKILL)
    damage(plugin.state_dir)
    docker_did_not_answer(restart(plugin))
    assert links <= netns.link_names()
    # a container removed meanwhile: its macvlan goes, the network's vxlan stays
    plugin.delete_endpoint(network_id, first)
    assert deleted(plugin) == ["ip link delete dev macvlan_" + first[:7]]
    assert {"vx_" + network_id[:12], "macvlan_" + second[:7]} <= netns.link_names()
    assert netns.flood_destinations("vx_" + network_id[:12]) == ["192.0.2.2"]


def restart_without_vtepdev(plugin, network_id):
    plugin.stop()
    plugin.flags = [flag for flag in plugin.flags if flag not in ("--vtepdev", "eth0")]
    return restart(plugin)


def record_of_a_newer_format(plugin, network_id):
    plugin.stop()
    path = os.path.join(plugin.state_dir, "networks", network_id + ".json")
    with open(path) as f:
        record = json.load(f)
    with open(path, "w") as f:
        json.dump({**record, "format": 99, "added_later": {"x": 1}}, f)
    return restart(plugin)


@pytest.mark.parametrize("change, words", [
    (restart_without_vtepdev, ["option Group=239.1.1.37 needs a VTEP device"]),
    (record_of_a_newer_format, ["record format 99", "newer docker-vxlan-plugin"]),
])
def test_a_record_that_cannot_be_used_is_an_error_and_its_links_stay(plugin, netns, change,
                                                                     words):
    network_id, endpoint_id, _, _ = create_and_join(
        plugin, {"VxlanId": "37", "Group": "239.1.1.37"})
    path = os.path.join(plugin.state_dir, "networks", network_id + ".json")
    new_log = change(plugin, network_id)
    with open(path) as f:
        kept = f.read()
    assert all(word in new_log() for word in words)
    assert network_id[:12] in new_log()
    # a new container on it is refused with the same words; nothing is deleted
    status, answer = plugin.call("CreateEndpoint", endpoint_request(network_id, new_id()))
    assert status == 500 and network_id[:12] in answer["Err"], answer
    assert all(word in answer["Err"] for word in words)
    reconciled_or_waiting(new_log)
    assert {"vx_" + network_id[:12], "macvlan_" + endpoint_id[:7]} <= netns.link_names()
    assert deleted(plugin) == []
    with open(path) as f:
        assert f.read() == kept  # the record is not rewritten


def test_a_crash_between_the_ip_and_bridge_steps_leaves_no_vxlan_without_flood_entries(
        netns, workdir):
    # the first Join runs `ip` (vxlan, alias), then `bridge` (flood entries):
    # the plugin dies while `bridge` hangs, before it has added anything
    plugin = Plugin(netns, workdir, ["--vtepdev", "eth0"], env=hanging_bridge_env(workdir))
    network_id, endpoint_id = new_id(), new_id()
    vxlan = "vx_" + network_id[:12]
    try:
        plugin.start()
        plugin.ok("CreateNetwork", network_request(network_id, {"VxlanId": "38",
                                                                "Peers": "192.0.2.2,192.0.2.3"}))
        plugin.ok("CreateEndpoint", endpoint_request(network_id, endpoint_id))
        open(os.path.join(workdir, "hang"), "w").close()
        join_in_background(plugin, network_id, endpoint_id)
        wait_for(lambda: os.path.exists(os.path.join(workdir, "bridge.pids")), 20,
                 "the Join to reach its bridge step")
        plugin.stop(signal.SIGKILL)
    finally:
        stop_hanging_bridges(workdir)
    assert netns.link(vxlan)["ifalias"] == "docker-vxlan-plugin:" + network_id
    assert netns.flood_destinations(vxlan) == []

    plugin.env = None  # the real bridge
    plugin.start()
    try:
        wait_for(lambda: netns.flood_destinations(vxlan) == ["192.0.2.2", "192.0.2.3"], 20,
                 "the flood entries to be added")
        second = new_id()
        plugin.ok("CreateEndpoint", endpoint_request(network_id, second, "10.42.0.3/24"))
        join(plugin, network_id, second)
        assert netns.flood_destinations(vxlan) == ["192.0.2.2", "192.0.2.3"]
    finally:
        plugin.stop()


def test_corrupt_state_file_is_logged_not_fatal(plugin):
    network_id, _, _, _ = create_and_join(plugin, {"VxlanId": "35"})
    plugin.stop()
    with open(os.path.join(plugin.state_dir, "networks", "f" * 64 + ".json"), "w") as f:
        f.write("{half a rec")
    plugin.start()
    assert "ignoring unreadable state file" in plugin.log()
    assert plugin.ok("GetCapabilities")


def test_go_original_vxlan_is_adopted_with_its_port_not_duplicated(plugin, netns):
    # The Go original left the port to the kernel: 8472. Adopted with that
    # port, the vxlan made again after the last container is on 8472 too.
    network_id = new_id()
    plugin.ok("CreateNetwork", network_request(network_id, {"VxlanId": "39"}))
    plugin.stop()
    plugin.flags += ["--vxlan-linger", "0"]  # the vxlan is made again at the next Join
    original = "vx_" + network_id[:12]
    netns.ip("link", "add", original, "type", "vxlan", "id", "39", "dev", "eth0",
             "dstport", "8472")
    plugin.start()
    first = new_id()
    plugin.ok("CreateEndpoint", endpoint_request(network_id, first))
    join(plugin, network_id, first)
    link = netns.link(original)
    assert link["ifalias"] == "docker-vxlan-plugin:" + network_id
    assert link["linkinfo"]["info_data"]["port"] == 8472
    assert netns.link("macvlan_" + first[:7])["link"] == original
    assert [n for n in netns.link_names() if n.startswith("vx")] == [original]
    plugin.delete_endpoint(network_id, first)
    assert original not in netns.link_names()
    second = new_id()
    plugin.ok("CreateEndpoint", endpoint_request(network_id, second))
    join(plugin, network_id, second)
    assert netns.link(original)["linkinfo"]["info_data"]["port"] == 8472
    # and the record says so, for the next start
    with open(os.path.join(plugin.state_dir, "networks", network_id + ".json")) as f:
        assert json.load(f)["options"]["Port"] == "8472"


def test_docker_network_rm_of_a_go_original_network_deletes_its_vxlan(plugin, netns):
    # Moved over from the Go original, which kept no records: a network none
    # of whose containers came back is removed; its vx_ link on 8472 goes with
    # it, and a marked vxlan of a network whose record was lost goes too.
    original_id, lost_id, other_id = new_id(), new_id(), new_id()
    original, other = "vx_" + original_id[:12], "vx_" + other_id[:12]
    netns.ip("link", "add", original, "type", "vxlan", "id", "41", "dev", "eth0",
             "dstport", "8472")
    netns.ip("link", "add", "vxlost", "type", "vxlan", "id", "42", "dev", "eth0",
             "dstport", "4789")
    netns.ip("link", "set", "dev", "vxlost", "alias", "docker-vxlan-plugin:" + lost_id)
    netns.ip("link", "add", other, "type", "vxlan", "id", "43", "dev", "eth0",
             "dstport", "8472")
    plugin.ok("DeleteNetwork", {"NetworkID": original_id})
    plugin.ok("DeleteNetwork", {"NetworkID": lost_id})
    assert netns.link_names() == {"lo", "eth0", other}  # another network's stays
    assert deleted(plugin) == [f"ip link delete dev {original}", "ip link delete dev vxlost"]


def test_a_vx_link_on_another_port_than_the_networks_port_is_not_adopted(plugin, netns):
    network_id = new_id()
    plugin.ok("CreateNetwork", network_request(network_id, {"VxlanId": "40", "Port": "4789"}))
    original = "vx_" + network_id[:12]
    netns.ip("link", "add", original, "type", "vxlan", "id", "40", "dev", "eth0",
             "dstport", "8472")
    endpoint_id = new_id()
    plugin.ok("CreateEndpoint", endpoint_request(network_id, endpoint_id))
    status, answer = plugin.call("Join", {"NetworkID": network_id, "EndpointID": endpoint_id})
    assert status == 500 and "Port=8472" in answer["Err"], answer
    assert "ifalias" not in netns.link(original)  # left as it was


HANGING_BRIDGE = """#!{python}
# bridge, whose `-batch -` hangs without running anything while the flag file exists
import os, sys, time
if sys.argv[1:3] == ["-batch", "-"]:
    script = sys.stdin.buffer.read()
    if script and os.path.exists({flag!r}):
        with open({pids!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        time.sleep(600)
        sys.exit(1)
    read_end, write_end = os.pipe()
    os.write(write_end, script)
    os.close(write_end)
    os.dup2(read_end, 0)
os.execv({real!r}, ["bridge"] + sys.argv[1:])
"""


def hanging_bridge_env(workdir):
    bindir = os.path.join(workdir, "bin")
    os.makedirs(bindir)
    path = os.path.join(bindir, "bridge")
    with open(path, "w") as f:
        f.write(HANGING_BRIDGE.format(python=sys.executable, flag=os.path.join(workdir, "hang"),
                                      pids=os.path.join(workdir, "bridge.pids"),
                                      real=shutil.which("bridge")))
    os.chmod(path, 0o755)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]}


def stop_hanging_bridges(workdir):
    """Kills the hanging bridges the test's plugin started, by their PIDs."""
    try:
        with open(os.path.join(workdir, "bridge.pids")) as f:
            pids = [int(line) for line in f if line.strip()]
    except FileNotFoundError:
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def join_in_background(plugin, network_id, endpoint_id):
    """A Join whose answer nobody waits for (the plugin dies during it)."""
    def call():
        try:
            plugin.call("Join", {"NetworkID": network_id, "EndpointID": endpoint_id})
        except OSError:
            pass
    threading.Thread(target=call, daemon=True).start()
