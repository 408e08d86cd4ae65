"""A state directory that cannot be written (read-only, full) fails the request
that needed it with a clear error, and the host stays as it was."""

import os
import subprocess

import pytest

from tests.kernel.conftest import (Plugin, create_and_join, endpoint_request, network_request,
                                   new_id)


def mount(*argv):
    subprocess.run(["mount", *argv], check=True, capture_output=True, text=True)


@pytest.fixture
def small_state_dir(workdir):
    """WORKDIR/state on a tmpfs of 256 KiB, unmounted after the test. The plugin's
    mount namespace (ip netns exec) holds a copy of the mount, on the same tmpfs:
    what the test does to the tmpfs (remount read-only, fill it) the plugin sees."""
    path = os.path.join(workdir, "state")
    os.makedirs(path)
    mount("-t", "tmpfs", "-o", "size=256k,mode=0700", "dvk-state", path)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


@pytest.fixture
def plugin_on_small_state(netns, workdir, small_state_dir):
    started = Plugin(netns, workdir, ["--vtepdev", "eth0"]).start()
    try:
        yield started
    finally:
        started.stop()


def refused(call, message):
    status, answer = call
    assert (status, answer) == (500, {"Err": message})


def test_read_only_state_dir_fails_each_request_that_writes_and_changes_nothing(
        plugin_on_small_state, netns, small_state_dir):
    plugin = plugin_on_small_state
    network_id, endpoint_id, _, joined = create_and_join(plugin, {"VxlanId": "60"})
    links = netns.link_names()
    assert {"vx_" + network_id[:12], joined["InterfaceName"]["SrcName"]} <= links
    mount("-o", "remount,ro", small_state_dir)
    try:
        reason = f"in {small_state_dir}: Read-only file system"
        other_network, other_endpoint = new_id(), new_id()
        refused(plugin.call("CreateNetwork", network_request(other_network, {"VxlanId": "61"})),
                f"cannot record network {other_network[:12]} {reason}")
        refused(plugin.call("CreateEndpoint", endpoint_request(network_id, other_endpoint,
                                                               "10.42.0.3/24")),
                f"cannot record endpoint {other_endpoint[:12]} {reason}")
        forget_endpoint = f"cannot forget endpoint {endpoint_id[:12]} {reason}"
        refused(plugin.call("DeleteEndpoint", {"NetworkID": network_id,
                                               "EndpointID": endpoint_id}), forget_endpoint)
        refused(plugin.call("DeleteNetwork", {"NetworkID": network_id}), forget_endpoint)
        assert netns.link_names() == links  # nothing was deleted, nothing made
        assert not any(r.get("rpc") in ("CreateNetwork", "CreateEndpoint", "DeleteEndpoint",
                                         "DeleteNetwork") and not r["cmd"].startswith("ip -d -j")
                       for r in plugin.audit())  # no command that changes the host ran
    finally:
        mount("-o", "remount,rw", small_state_dir)
    # writable again: the same requests work, and the host ends clean
    plugin.delete_endpoint(network_id, endpoint_id)
    plugin.ok("DeleteNetwork", {"NetworkID": network_id})
    assert netns.link_names() == {"lo", "eth0"}
    assert os.listdir(os.path.join(small_state_dir, "networks")) == []
    assert os.listdir(os.path.join(small_state_dir, "endpoints")) == []


def test_full_state_dir_fails_create_network_and_leaves_no_file(plugin_on_small_state, netns,
                                                               small_state_dir):
    plugin = plugin_on_small_state
    filler = os.path.join(small_state_dir, "filler")
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError:  # ENOSPC: the tmpfs is full
            pass
    network_id = new_id()
    refused(plugin.call("CreateNetwork", network_request(network_id, {"VxlanId": "62"})),
            f"cannot record network {network_id[:12]} in {small_state_dir}: "
            "No space left on device")
    assert os.listdir(os.path.join(small_state_dir, "networks")) == []  # no half-written file
    assert netns.link_names() == {"lo", "eth0"}
    os.unlink(filler)
    plugin.ok("CreateNetwork", network_request(network_id, {"VxlanId": "62"}))
    assert os.listdir(os.path.join(small_state_dir, "networks")) == [network_id + ".json"]
