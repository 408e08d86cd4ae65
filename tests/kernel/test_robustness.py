"""Stopping and remembering: SIGTERM lets requests in flight finish, then
removes the socket; state files are replaced whole, never rewritten in place,
and what an interrupted save leaves is cleaned up at start."""

import json
import os
import signal
import stat
import time

from lab import connects  # scripts/lab.py
from tests.kernel.conftest import network_request, new_id, start_join


def test_sigterm_finishes_requests_in_flight_then_removes_the_socket(slow_plugin, netns):
    plugin = slow_plugin(4)
    results = {}
    thread, network_id = start_join(plugin, results)
    time.sleep(0.5)  # the Join is now inside its slow `ip`
    plugin.process.send_signal(signal.SIGTERM)

    deadline = time.monotonic() + 10
    while connects(plugin.socket):  # new requests are turned away at once
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        time.sleep(0.05)
    thread.join(30)
    status, answer = results["join"]
    assert status == 200 and answer["InterfaceName"]["SrcName"].startswith("macvlan_")
    assert {"vx_" + network_id[:12], answer["InterfaceName"]["SrcName"]} <= \
        netns.link_names()  # it did all of its work
    assert plugin.process.wait(30) == 0
    assert not os.path.exists(plugin.socket)
    assert "finishing requests in flight" in plugin.log()


def test_state_is_replaced_whole_and_private(plugin):
    network_id = new_id()
    path = os.path.join(plugin.state_dir, "networks", network_id + ".json")
    plugin.ok("CreateNetwork", network_request(network_id, {"VxlanId": "41"}))
    first = os.stat(path)
    plugin.ok("CreateNetwork", network_request(network_id, {"VxlanId": "42"}))
    second = os.stat(path)
    # a new file renamed over the old one, not the old one rewritten
    assert second.st_ino != first.st_ino
    with open(path) as f:
        assert json.load(f)["options"] == {"VxlanId": "42"}
    assert [name for name in os.listdir(os.path.dirname(path)) if name.startswith(".")] == []
    assert stat.S_IMODE(second.st_mode) & 0o077 == 0
    for kind in ("networks", "endpoints"):
        assert stat.S_IMODE(os.stat(os.path.join(plugin.state_dir, kind)).st_mode) & 0o077 == 0


def test_an_interrupted_save_is_cleaned_up_and_the_old_record_stands(plugin):
    network_id = new_id()
    plugin.ok("CreateNetwork", network_request(network_id, {"VxlanId": "43"}))
    plugin.stop(signal.SIGKILL)
    folder = os.path.join(plugin.state_dir, "networks")
    leftover = os.path.join(folder, ".tmp-interrupted")
    with open(leftover, "w") as f:
        f.write('{"id": "' + network_id + '", "options": {"VxlanId": "9')  # cut short
    plugin.start()
    assert not os.path.exists(leftover)
    # the network is still known with its options: its VNI is still taken
    status, answer = plugin.call("CreateNetwork", network_request(new_id(), {"VxlanId": "43"}))
    assert status == 500 and network_id[:12] in answer["Err"]
    assert "ignoring unreadable" not in plugin.log()
