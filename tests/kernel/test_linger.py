"""The vxlan's life after its last container (--vxlan-linger): it stays for the
next container, goes in the background when the time is up (logged with its
cause), and a Join never ends with a container on a deleted vxlan."""

import os
import threading
import time

from tests.kernel.conftest import Plugin, create_and_join, endpoint_request, join, new_id
from tests.wait import wait_for


def lingering_plugin(netns, workdir, seconds, env=None):
    return Plugin(netns, workdir, ["--vtepdev", "eth0", "--vxlan-linger", str(seconds)],
                  env=env).start()


def delete_endpoint(plugin, network_id, endpoint_id):
    plugin.ok("Leave", {"NetworkID": network_id, "EndpointID": endpoint_id})
    plugin.delete_endpoint(network_id, endpoint_id)


def records_of(plugin, command):
    """The audit log's records (run, then result) of COMMAND."""
    return [r for r in plugin.audit() if r["cmd"] == command]


def test_vxlan_outlives_the_last_container_then_goes_with_its_cause(netns, workdir):
    plugin = lingering_plugin(netns, workdir, 1)
    try:
        network_id, endpoint_id, _, _ = create_and_join(plugin, {"VxlanId": "50"})
        vxlan = "vx_" + network_id[:12]
        delete_endpoint(plugin, network_id, endpoint_id)
        assert vxlan in netns.link_names()
        assert "macvlan_" + endpoint_id[:7] not in netns.link_names()

        deletion = f"ip link delete dev {vxlan}"
        wait_for(lambda: len(records_of(plugin, deletion)) == 2, 30, f"{vxlan} to be deleted")
        run, result = records_of(plugin, deletion)
        assert vxlan not in netns.link_names()
        for record in (run, result):
            assert "rpc" not in record and "endpoint" not in record  # no request caused it
            assert record["network"] == network_id
            assert record["cause"] == ("its network has had no container on this host "
                                       "for 1 s (--vxlan-linger)")
        assert result["status"] == "ok"
        assert (f"run ip link delete dev {vxlan} [network={network_id[:12]} cause: its network "
                "has had no container on this host for 1 s (--vxlan-linger)]") in plugin.log()
        # the next container makes it anew
        second = new_id()
        plugin.ok("CreateEndpoint", endpoint_request(network_id, second, "10.42.0.3/24"))
        join(plugin, network_id, second)
        assert netns.link("macvlan_" + second[:7])["link"] == vxlan
    finally:
        plugin.stop()


def test_a_join_while_the_vxlan_lingers_keeps_it(netns, workdir):
    plugin = lingering_plugin(netns, workdir, 2)
    try:
        network_id, first, _, _ = create_and_join(plugin, {"VxlanId": "51"})
        vxlan = "vx_" + network_id[:12]
        index = netns.link(vxlan)["ifindex"]
        delete_endpoint(plugin, network_id, first)
        second = new_id()
        plugin.ok("CreateEndpoint", endpoint_request(network_id, second, "10.42.0.3/24"))
        join(plugin, network_id, second)
        time.sleep(4)  # twice the linger: the cancelled deletion must not run late
        assert netns.link(vxlan)["ifindex"] == index
        assert netns.link("macvlan_" + second[:7])["link"] == vxlan
        assert [r["cmd"] for r in plugin.audit() if r["event"] == "run"
                and r["cmd"].startswith("ip ") and vxlan in r["cmd"]
                and "macvlan" not in r["cmd"]] == [
            f"ip link add {vxlan} type vxlan id 51 dev eth0 dstport 4789",
            f"ip link set dev {vxlan} alias docker-vxlan-plugin:{network_id} up"]
    finally:
        plugin.stop()


def test_a_join_during_the_deletion_waits_and_makes_the_vxlan_anew(slow_plugin, netns, workdir):
    plugin = slow_plugin(30, "--vxlan-linger", "3")
    gate = os.path.join(workdir, "slow")  # while it exists, every `ip` waits
    network_id, first, _, _ = create_and_join(plugin, {"VxlanId": "52"})
    vxlan = "vx_" + network_id[:12]
    index = netns.link(vxlan)["ifindex"]
    delete_endpoint(plugin, network_id, first)
    open(gate, "w").close()  # the deletion, 3 s from now, will be held inside its `ip`

    deletion = f"ip link delete dev {vxlan}"
    deleting = wait_for(lambda: records_of(plugin, deletion), 30,
                        "the deletion of the unused vxlan to start")
    second = new_id()
    plugin.ok("CreateEndpoint", endpoint_request(network_id, second, "10.42.0.3/24"))
    results = {}
    thread = threading.Thread(target=lambda: results.update(join=plugin.call("Join", {
        "NetworkID": network_id, "EndpointID": second})))
    thread.start()
    time.sleep(0.5)  # the Join has reached the plugin
    assert thread.is_alive()  # it waits for the deletion
    assert records_of(plugin, deletion) == deleting  # no result: held, they overlap
    os.unlink(gate)
    thread.join(60)

    status, answer = results["join"]
    assert status == 200, answer
    assert netns.link("macvlan_" + second[:7])["link"] == vxlan  # a container on a live vxlan
    assert netns.link(vxlan)["ifindex"] != index  # made anew after the deletion
    records = plugin.audit()
    deleted = next(i for i, r in enumerate(records) if r["event"] == "result"
                   and r["cmd"] == deletion)
    created = next(i for i, r in enumerate(records) if r["event"] == "run"
                   and r.get("endpoint") == second and r["cmd"].startswith(f"ip link add {vxlan} "))
    assert records[deleted]["status"] == "ok" and deleted < created
    assert deleting[0]["cause"].endswith("(--vxlan-linger)")


def test_delete_network_while_the_vxlan_lingers_deletes_it_at_once(plugin, netns):
    network_id, endpoint_id, _, _ = create_and_join(plugin, {"VxlanId": "53"})
    vxlan = "vx_" + network_id[:12]
    delete_endpoint(plugin, network_id, endpoint_id)
    assert vxlan in netns.link_names()  # the default: it lingers for 60 s
    plugin.ok("DeleteNetwork", {"NetworkID": network_id})
    assert netns.link_names() == {"lo", "eth0"}
    assert [(r["event"], r["rpc"]) for r in records_of(plugin, f"ip link delete dev {vxlan}")] \
        == [("run", "DeleteNetwork"), ("result", "DeleteNetwork")]


def test_linger_zero_deletes_the_vxlan_with_the_last_container(netns, workdir):
    plugin = lingering_plugin(netns, workdir, 0)
    try:
        network_id, endpoint_id, _, _ = create_and_join(plugin, {"VxlanId": "54"})
        delete_endpoint(plugin, network_id, endpoint_id)
        assert netns.link_names() == {"lo", "eth0"}
        assert [r["rpc"] for r in plugin.audit() if r["event"] == "run"
                and r["cmd"] == "ip link delete dev vx_" + network_id[:12]] == ["DeleteEndpoint"]
    finally:
        plugin.stop()
