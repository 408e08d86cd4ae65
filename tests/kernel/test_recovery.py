"""Restarts: the plugin killed and started again keeps its networks, adopts the
Go original's links, and removes only unused links it provably owns."""

import os
import signal

from tests.kernel.conftest import (create_and_join, endpoint_request, join, network_request,
                                   new_id)
from tests.wait import wait_for


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
        plugin.ok("DeleteEndpoint", {"NetworkID": network_id, "EndpointID": endpoint})
    assert netns.link_names() == {"lo", "eth0", vxlan}  # it lingers for the next container
    plugin.ok("DeleteNetwork", {"NetworkID": network_id})
    assert netns.link_names() == {"lo", "eth0"}


def test_unused_links_of_ours_are_removed_at_start_and_others_kept(plugin, netns):
    network_id, endpoint_id, _, _ = create_and_join(plugin, {"VxlanId": "31"})
    plugin.stop(signal.SIGKILL)
    # left behind by a crash: a vxlan of a network the state no longer has...
    netns.ip("link", "add", "vxorphan", "type", "vxlan", "id", "32", "dstport", "4789")
    netns.ip("link", "set", "dev", "vxorphan", "alias", "docker-vxlan-plugin:" + new_id())
    # ...and one an admin made, which is not ours
    netns.ip("link", "add", "vxadmin", "type", "vxlan", "id", "33", "dstport", "4789")
    plugin.start()
    wait_for(lambda: "vxorphan" not in netns.link_names())
    names = netns.link_names()
    assert "vxadmin" in names
    assert "vx_" + network_id[:12] in names  # its endpoint still exists
    assert any(r["cmd"] == "ip link delete dev vxorphan" for r in plugin.audit())


def test_go_original_vxlan_is_adopted_not_duplicated(plugin, netns):
    network_id = new_id()
    plugin.ok("CreateNetwork", network_request(network_id, {"VxlanId": "34"}))
    plugin.stop()
    original = "vx_" + network_id[:12]
    netns.ip("link", "add", original, "type", "vxlan", "id", "34", "dev", "eth0",
             "dstport", "4789")
    endpoint_id = new_id()
    plugin.start()
    plugin.ok("CreateEndpoint", endpoint_request(network_id, endpoint_id))
    join(plugin, network_id, endpoint_id)
    link = netns.link(original)
    assert link["ifalias"] == "docker-vxlan-plugin:" + network_id
    assert netns.link("macvlan_" + endpoint_id[:7])["link"] == original
    vxlans = [n for n in netns.link_names() if n.startswith("vx")]
    assert vxlans == [original]


def test_corrupt_state_file_is_logged_not_fatal(plugin):
    network_id, _, _, _ = create_and_join(plugin, {"VxlanId": "35"})
    plugin.stop()
    with open(os.path.join(plugin.state_dir, "networks", "f" * 64 + ".json"), "w") as f:
        f.write("{half a rec")
    plugin.start()
    assert "ignoring unreadable state file" in plugin.log()
    assert plugin.ok("GetCapabilities")
