"""How commands reach `ip`: an `ip -batch -` started ahead of need takes each
request's lines. It must act on the links as they are when the request comes
(not when it started), survive being killed while it waits, and go with the
plugin."""

import concurrent.futures
import os
import signal
import time

from lab import alive  # scripts/lab.py
from tests.kernel.conftest import (create_and_join, endpoint_request, join, network_request,
                                   new_id, one_waiting, waiting_batch_processes)
from tests.wait import wait_for


def join_commands(plugin, endpoint_id):
    return [(r["cmd"], r["status"]) for r in plugin.audit()
            if r["event"] == "result" and r.get("endpoint") == endpoint_id
            and r.get("rpc") == "Join"]


def test_a_waiting_process_sees_links_as_they_are_when_used(plugin, netns):
    network_id, _, _, _ = create_and_join(plugin, {"VxlanId": "40"})
    vxlan = "vx_" + network_id[:12]
    one_waiting(plugin)
    # Behind the plugin's back, its vxlan is made anew: same name, new index.
    old_index = netns.link(vxlan)["ifindex"]
    netns.ip("link", "delete", "dev", vxlan)
    netns.ip("link", "add", vxlan, "type", "vxlan", "id", "40", "dev", "eth0", "dstport", "4789")
    netns.ip("link", "set", "dev", vxlan, "alias", "docker-vxlan-plugin:" + network_id, "up")
    new_index = netns.link(vxlan)["ifindex"]
    assert new_index != old_index

    second = new_id()
    plugin.ok("CreateEndpoint", endpoint_request(network_id, second, "10.42.0.3/24"))
    join(plugin, network_id, second)
    macvlan = netns.link("macvlan_" + second[:7])
    assert macvlan["link"] == vxlan  # named by the index it has now
    # one command, right the first time: no stale index, no retry
    assert [status for _, status in join_commands(plugin, second)] == ["ok"]


def test_a_waiting_process_killed_is_replaced(plugin, netns):
    network_id, _, _, _ = create_and_join(plugin, {"VxlanId": "41"})
    killed = one_waiting(plugin)
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: not alive(killed))

    second = new_id()
    plugin.ok("CreateEndpoint", endpoint_request(network_id, second, "10.42.0.3/24"))
    join(plugin, network_id, second)
    assert "macvlan_" + second[:7] in netns.link_names()
    assert [status for _, status in join_commands(plugin, second)] == ["ok"]
    assert one_waiting(plugin) != killed


def test_waiting_processes_go_with_the_plugin(plugin):
    create_and_join(plugin, {"VxlanId": "42"})
    waiting = one_waiting(plugin)
    assert plugin.stop(signal.SIGTERM) == 0
    assert not alive(waiting)

    plugin.start()
    create_and_join(plugin, {"VxlanId": "43"})
    waiting = one_waiting(plugin)
    plugin.stop(signal.SIGKILL)
    # its input closes with the plugin: it reads the end of it and exits
    wait_for(lambda: not alive(waiting))


def test_concurrent_requests_leave_one_waiting_process(plugin, netns):
    # Joins on one network wait for each other; on different networks they run at once
    pairs = []
    for number in range(10):
        network_id, endpoint_id = new_id(), new_id()
        plugin.ok("CreateNetwork", network_request(network_id, {"VxlanId": str(50 + number)}))
        plugin.ok("CreateEndpoint", endpoint_request(network_id, endpoint_id))
        pairs.append((network_id, endpoint_id))
    with concurrent.futures.ThreadPoolExecutor(len(pairs)) as pool:
        list(pool.map(lambda pair: join(plugin, *pair), pairs))
    assert {"macvlan_" + e[:7] for _, e in pairs} <= netns.link_names()
    time.sleep(1)  # any process started for them is up by now
    assert len(waiting_batch_processes(plugin.process.pid)) == 1
