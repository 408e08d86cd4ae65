"""Global scope in swarm mode: the managed plugin with SCOPE=global on both
nodes of a two-node swarm (h1 manager, h2 worker). One `docker network create
--attachable` on the manager gives a network on every node: swarm's IPAM hands
out the addresses, the -o options reach each node (AllocateNetwork echoes
them), containers and a service's tasks on both nodes reach each other, and
removing it all leaves no vxlan on any node."""

import ipaddress
import json
import shutil

import pytest

from demo import network_field, plugin_links  # scripts/demo.py
from lab import IMAGE  # scripts/lab.py
from tests.e2e.test_install import (MANAGED, build_image, install_managed_plugin,
                                    make_plugin_dir, ping, vxlan_of)
from tests.wait import wait_for

SETTLE = 60.0   # seconds for swarm to converge (tasks start, networks go)


def settled(what, check):
    """check()'s first true result, polled for up to SETTLE seconds."""
    return wait_for(check, SETTLE, what, interval=0.5)


@pytest.fixture(scope="module")
def swarm(lab2, build_cache, tmp_path_factory):
    """h1, h2 in one swarm, each with the managed plugin (global scope) and
    its own state dir; the state dirs are returned too."""
    h1, h2 = lab2.hosts
    directory = tmp_path_factory.mktemp("swarm")
    try:
        build_image(h1, build_cache)
        plugin_dir = make_plugin_dir(h1, directory / "plugin")
        states = [install_managed_plugin(h, MANAGED, plugin_dir, "SCOPE=global", "VTEPDEV=eth0")
                  for h in (h1, h2)]
        h1.docker("swarm", "init", "--advertise-addr", h1.underlay_ip)
        token = h1.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        h2.docker("swarm", "join", "--token", token, f"{h1.underlay_ip}:2377")
        settled("both nodes ready", lambda: h1.docker(
            "node", "ls", "--format", "{{.Status}}").stdout.split() == ["Ready", "Ready"])
        yield h1, h2, states
    finally:
        for h in (h2, h1):
            h.docker("swarm", "leave", "--force", check=False)
            h.docker("plugin", "rm", "-f", MANAGED, check=False)
        shutil.rmtree(directory)


@pytest.fixture
def undo(swarm):
    """(host, docker args) that remove what a test made, run in reverse order."""
    removals = []
    yield removals
    for host, args in reversed(removals):
        host.docker(*args, check=False)


def task_containers(host, service):
    return host.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"
                       ).stdout.split()


def test_attachable_network_and_a_service_span_the_swarm(swarm, undo):
    h1, h2, states = swarm
    undo.append((h1, ("network", "rm", "vx45")))
    network_id = h1.docker("network", "create", "-d", MANAGED, "--attachable",
                           "-o", "VxlanId=45", "-o", "Group=239.1.1.45",
                           "--subnet", "10.45.0.0/24", "vx45").stdout.strip()
    assert len(network_id) == 25                  # swarm's IDs, not 64 hex digits
    network = json.loads(h1.docker("network", "inspect", "vx45").stdout)[0]
    assert network["Scope"] == "swarm"
    assert network["Options"] == {"VxlanId": "45", "Group": "239.1.1.45"}

    # a container on each node, each given its address by swarm's IPAM
    for name, host in (("c1", h1), ("c2", h2)):
        undo.append((host, ("rm", "-f", name)))
        host.docker("run", "-d", "--name", name, "--net", "vx45", IMAGE, "sleep", "600")
    c1, c2 = network_field(h1, "c1", "vx45"), network_field(h2, "c2", "vx45")
    ping(h1, "c1", c2)
    ping(h2, "c2", c1)
    # the -o options reached the worker: its vxlan is made from them
    for host in (h1, h2):
        data = vxlan_of(host, network_id)["linkinfo"]["info_data"]
        assert (data["id"], data["group"], data["link"]) == (45, "239.1.1.45", "eth0")

    # a service with a replica on each node
    undo.append((h1, ("service", "rm", "svc45")))
    h1.docker("service", "create", "--detach", "--no-resolve-image", "--name", "svc45",
              "--network", "vx45", "--replicas", "2", "--replicas-max-per-node", "1",
              "--stop-grace-period", "1s", IMAGE, "sleep", "600")
    t1, t2 = (settled(f"a task of svc45 running on {h.name}",
                       lambda h=h: task_containers(h, "svc45"))[0] for h in (h1, h2))
    a1, a2 = network_field(h1, t1, "vx45"), network_field(h2, t2, "vx45")
    ping(h1, t1, a2)
    ping(h2, t2, a1)
    ping(h1, t1, c2)

    addresses = [c1, c2, a1, a2]
    assert len(set(addresses)) == 4               # one IPAM for the whole swarm
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.45.0.0/24")
               for a in addresses)

    # remove it all: no vxlan left on any node, and every node forgot the network
    h1.docker("service", "rm", "svc45")
    h1.docker("rm", "-f", "c1")
    h2.docker("rm", "-f", "c2")
    settled("svc45's tasks gone", lambda: not task_containers(h1, "svc45")
             and not task_containers(h2, "svc45"))
    h1.docker("network", "rm", "vx45")
    for host, state in zip((h1, h2), states):
        settled(f"no vxlan on {host.name}", lambda host=host: plugin_links(host) == [])
        settled(f"{host.name}'s plugin forgot vx45",
                 lambda state=state: not (state / "networks" / f"{network_id}.json").exists())
    assert "vx45" not in h2.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
