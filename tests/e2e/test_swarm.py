"""Global scope in swarm mode: the managed plugin with SCOPE=global on both
nodes of a two-node swarm (h1 manager, h2 worker). One `docker network create
--attachable` on the manager gives a network on every node: swarm's IPAM hands
out the addresses, the -o options reach each node (AllocateNetwork echoes
them), containers and a service's tasks (--endpoint-mode dnsrr) on both nodes
reach each other, by address and by name, and removing it all leaves no vxlan
on any node. The manager's AllocateNetwork refuses a bad option and a VNI
another swarm network holds; `docker network create` cannot show that
refusal, so the tests read what an operator can see."""

import ipaddress
import json
import re
import shutil

import pytest

from demo import network_field, plugin_links  # scripts/demo.py
from lab import IMAGE  # scripts/lab.py
from tests.e2e.test_install import (MANAGED, PLUGIN_IMAGE, build_image,
                                    install_managed_plugin, make_plugin_dir, ping, vxlan_of)
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


def create_service(manager, undo, name, *flags):
    """A service of sleeping busyboxes on vx45, with DNS round robin."""
    undo.append((manager, ("service", "rm", name)))
    manager.docker("service", "create", "--detach", "--no-resolve-image", "--name", name,
                   "--network", "vx45", "--endpoint-mode", "dnsrr", "--stop-grace-period", "1s",
                   *flags, IMAGE, "sleep", "600")


def resolved(host, container, name):
    """The addresses Docker's DNS gives CONTAINER for NAME (busybox nslookup)."""
    answer = host.docker("exec", container, "nslookup", name).stdout
    # the first "Address" is the DNS server's (127.0.0.11:53)
    return set(re.findall(r"^Address(?: \d+)?:\s+(\d+\.\d+\.\d+\.\d+)$", answer, re.M))


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

    # a service with a replica on each node; a virtual IP does not work on
    # this driver (dockerd: "Unable to find load balancing endpoint"), so
    # services use DNS round robin
    create_service(h1, undo, "svc45", "--replicas", "2", "--replicas-max-per-node", "1")
    t1, t2 = (settled(f"a task of svc45 running on {h.name}",
                       lambda h=h: task_containers(h, "svc45"))[0] for h in (h1, h2))
    a1, a2 = network_field(h1, t1, "vx45"), network_field(h2, t2, "vx45")
    ping(h1, t1, a2)
    ping(h2, t2, a1)
    ping(h1, t1, c2)
    # the service's name gives the address of every task, here one on each node
    assert resolved(h1, "c1", "svc45") == {a1, a2}
    # and a service whose one task is on h2 answers to its name on h1
    create_service(h1, undo, "rr45", "--constraint", "node.hostname==h2")
    settled("rr45's task running on h2", lambda: task_containers(h2, "rr45"))
    ping(h1, "c1", "rr45")

    addresses = [c1, c2, a1, a2]
    assert len(set(addresses)) == 4               # one IPAM for the whole swarm
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.45.0.0/24")
               for a in addresses)

    # remove it all: no vxlan left on any node, and every node forgot the network
    h1.docker("service", "rm", "svc45", "rr45")
    h1.docker("rm", "-f", "c1")
    h2.docker("rm", "-f", "c2")
    settled("the services' tasks gone", lambda: not any(
        task_containers(h, service) for h in (h1, h2) for service in ("svc45", "rr45")))
    h1.docker("network", "rm", "vx45")
    for host, state in zip((h1, h2), states):
        settled(f"no vxlan on {host.name}", lambda host=host: plugin_links(host) == [])
        settled(f"{host.name}'s plugin forgot vx45",
                 lambda state=state: not (state / "networks" / f"{network_id}.json").exists())
    assert "vx45" not in h2.docker("network", "ls", "--format", "{{.Name}}").stdout.split()


# --- what AllocateNetwork refuses ------------------------------------------------------

def driver_of(manager, network):
    """The network's driver, or "" while swarm has not allocated it."""
    return manager.docker("network", "inspect", "--format", "{{.Driver}}", network).stdout.strip()


def refused(manager, network, reason):
    """Swarm could not allocate NETWORK, and the manager's dockerd log says why."""
    network_id = manager.docker("network", "inspect", "--format", "{{.Id}}", network
                                ).stdout.strip()

    def logged():
        with open(manager.dockerd_log) as log:
            return any(f"Failed allocation for network {network_id}" in line and reason in line
                       for line in log)
    settled(f"the allocation of {network} refused: {reason}", logged)
    assert driver_of(manager, network) == ""


def test_a_bad_option_is_only_in_the_managers_log_and_explain_says_it_first(swarm, undo):
    """README: under swarm, `docker network create` succeeds whatever the
    options; `docker-vxlan-plugin explain` says beforehand what AllocateNetwork
    will say."""
    h1, _, _ = swarm
    explained = h1.docker("run", "--rm", "--net=host", PLUGIN_IMAGE, "explain",
                          "-o", "VxlanId=big", check=False)
    assert explained.returncode == 1
    reason = explained.stderr.strip().removeprefix("explain: ")
    assert reason.startswith("option VxlanId: invalid value 'big'")
    undo.append((h1, ("network", "rm", "vxbad")))
    h1.docker("network", "create", "-d", MANAGED, "-o", "VxlanId=big", "vxbad")
    refused(h1, "vxbad", reason)


def test_two_swarm_networks_never_share_a_vni(swarm, undo):
    """The manager's AllocateNetwork refuses a VNI (and port) another swarm
    network holds, also after the plugin restarts; once the holder is removed
    (FreeNetwork), swarm retries and one waiting network gets it."""
    h1, _, _ = swarm
    for name in ("vx46a", "vx46b", "vx46c"):
        undo.append((h1, ("network", "rm", name)))

    def create(name, subnet):
        h1.docker("network", "create", "-d", MANAGED, "--attachable", "-o", "VxlanId=46",
                  "--subnet", subnet, name)

    create("vx46a", "10.46.0.0/24")
    settled("vx46a allocated", lambda: driver_of(h1, "vx46a") == MANAGED)
    holder = h1.docker("network", "inspect", "--format", "{{.Id}}", "vx46a").stdout.strip()
    reason = f"option VxlanId=46: already used by swarm network {holder} (with Port=4789)"
    create("vx46b", "10.47.0.0/24")
    refused(h1, "vx46b", reason)

    h1.docker("plugin", "disable", MANAGED)      # the manager's plugin restarts
    h1.docker("plugin", "enable", MANAGED, timeout=120)
    create("vx46c", "10.48.0.0/24")
    refused(h1, "vx46c", reason)

    h1.docker("network", "rm", "vx46a")
    settled("vx46b or vx46c allocated once vx46a is gone", lambda: MANAGED in (
        driver_of(h1, "vx46b"), driver_of(h1, "vx46c")))
    assert sorted([driver_of(h1, "vx46b"), driver_of(h1, "vx46c")]) == ["", MANAGED]
