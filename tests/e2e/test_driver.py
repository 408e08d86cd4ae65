"""The driver's user story on a real Docker engine (one lab host): create a
network, run containers that reach each other, refuse bad options, honour
--mac-address and MTU, two networks at once, nothing left after removal, and
the command log holding the exact commands."""

import json
import shlex

import pytest

from demo import plugin_links  # scripts/demo.py
from lab import IMAGE  # scripts/lab.py


@pytest.fixture(scope="module")
def host(lab1):
    host = lab1.hosts[0]
    host.start_plugin(["-vtepdev", "eth0"])
    try:
        yield host
    finally:
        host.stop_plugin()


@pytest.fixture
def cleanup(host):
    """Names of containers and networks to remove after the test, whatever happens."""
    made = {"containers": [], "networks": []}
    yield made
    for name in made["containers"]:
        host.docker("rm", "-f", name, check=False)
    for name in made["networks"]:
        host.docker("network", "rm", name, check=False)


def create_network(host, cleanup, name, *args):
    cleanup["networks"].append(name)
    return host.docker("network", "create", "-d", "vxlan", *args, name, check=False)


def run_detached(host, cleanup, name, network, *args):
    cleanup["containers"].append(name)
    host.docker("run", "-d", "--name", name, "--net", network, *args, IMAGE, "sleep", "600")
    return inspect(host, name)


def inspect(host, name):
    return json.loads(host.docker("inspect", name).stdout)[0]


def in_container(host, name, command):
    return host.docker("exec", name, "sh", "-c", command).stdout


def test_user_story(host, cleanup):
    created = create_network(host, cleanup, "vxlan42", "-o", "VxlanId=42",
                             "-o", "Group=239.1.1.42", "--subnet", "10.42.0.0/24",
                             "--gateway", "10.42.0.254")
    assert created.returncode == 0, created.stderr
    network_id = created.stdout.strip()
    assert plugin_links(host) == []  # nothing on the host until a container joins

    a = run_detached(host, cleanup, "story-a", "vxlan42")
    address = a["NetworkSettings"]["Networks"]["vxlan42"]["IPAddress"]
    ping = host.docker("run", "--rm", "--net", "vxlan42", IMAGE, "ping", "-c1", "-W2", address,
                       check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    routes = in_container(host, "story-a", "ip route")
    assert "default via 10.42.0.254 dev eth0" in routes
    assert "10.42.0.254" not in host.run_in_ns("ip -j addr").stdout  # never on the host
    vxlan = [link for link in host.links() if link["ifname"] == "vx_" + network_id[:12]][0]
    assert vxlan["linkinfo"]["info_data"]["group"] == "239.1.1.42"
    assert vxlan["linkinfo"]["info_data"]["link"] == "eth0"

    host.docker("rm", "-f", "story-a")
    host.docker("network", "rm", "vxlan42")
    assert plugin_links(host) == []


def test_bad_option_is_refused_at_network_create(host, cleanup):
    refused = create_network(host, cleanup, "bad", "-o", "VxLanID2=42", "--subnet",
                             "10.43.0.0/24")
    assert refused.returncode != 0
    assert "unknown option 'VxLanID2'; did you mean 'VxlanId'?" in refused.stderr
    refused = create_network(host, cleanup, "bad", "-o", "VxlanId=42", "-o", "TTL=300",
                             "--subnet", "10.43.0.0/24")
    assert "option TTL: invalid value '300'; expected an integer from 0 to 255" in refused.stderr
    assert "bad" not in host.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert plugin_links(host) == []


def test_mac_address_and_mtu(host, cleanup):
    assert create_network(host, cleanup, "mtu", "-o", "VxlanId=44", "-o", "vxlanMTU=1400",
                          "--subnet", "10.44.0.0/24").returncode == 0
    given = run_detached(host, cleanup, "given", "mtu", "--mac-address", "02:44:00:00:00:99")
    assert given["NetworkSettings"]["Networks"]["mtu"]["MacAddress"] == "02:44:00:00:00:99"
    assert "02:44:00:00:00:99" in in_container(host, "given", "cat /sys/class/net/eth0/address")
    assert in_container(host, "given", "cat /sys/class/net/eth0/mtu").strip() == "1400"

    chosen = run_detached(host, cleanup, "chosen", "mtu")
    shown = chosen["NetworkSettings"]["Networks"]["mtu"]["MacAddress"]
    address = chosen["NetworkSettings"]["Networks"]["mtu"]["IPAddress"]
    assert shown == "02:42:" + ":".join(f"{int(b):02x}" for b in address.split("."))
    assert in_container(host, "chosen", "cat /sys/class/net/eth0/address").strip() == shown


def test_two_networks_at_once(host, cleanup):
    for vni, name in ((45, "n45"), (46, "n46")):
        assert create_network(host, cleanup, name, "-o", f"VxlanId={vni}",
                              "--subnet", f"10.{vni}.0.0/24").returncode == 0
        run_detached(host, cleanup, f"{name}a", name)
        run_detached(host, cleanup, f"{name}b", name)
    vxlans = [link for link in host.links() if link["ifname"].startswith("vx_")]
    assert sorted(l["linkinfo"]["info_data"]["id"] for l in vxlans) == [45, 46]
    for name in ("n45", "n46"):
        b = inspect(host, f"{name}b")["NetworkSettings"]["Networks"][name]["IPAddress"]
        assert host.docker("exec", f"{name}a", "ping", "-c1", "-W2", b, check=False).returncode == 0
    # each container has exactly one interface besides lo: no multi-homing
    assert in_container(host, "n45a", "ls /sys/class/net").split() == ["eth0", "lo"]
    for name in ("n45a", "n45b", "n46a", "n46b"):
        host.docker("rm", "-f", name)
    for name in ("n45", "n46"):
        host.docker("network", "rm", name)
    assert plugin_links(host) == []


def test_command_log_holds_the_exact_commands(host, cleanup):
    assert create_network(host, cleanup, "logged", "-o", "VxlanId=47",
                          "--subnet", "10.47.0.0/24").returncode == 0
    network_id = host.docker("network", "inspect", "-f", "{{.Id}}", "logged").stdout.strip()
    container = run_detached(host, cleanup, "logged1", "logged")
    endpoint_id = container["NetworkSettings"]["Networks"]["logged"]["EndpointID"]
    host.docker("rm", "-f", "logged1")
    host.docker("network", "rm", "logged")

    vxlan, macvlan = "vx_" + network_id[:12], "macvlan_" + endpoint_id[:7]
    records = [r for r in host.audit_records() if r.get("network") == network_id]
    ran = [(r["rpc"], r["cmd"]) for r in records if r["event"] == "result"
           and r["status"] == "ok" and not r["cmd"].startswith("ip -d -j")]
    mac = container["NetworkSettings"]["Networks"]["logged"]["MacAddress"]
    assert ran == [
        ("Join", f"ip link add {vxlan} type vxlan id 47 dev eth0 dstport 4789"),
        ("Join", f"ip link set dev {vxlan} alias docker-vxlan-plugin:{network_id} up"),
        ("Join", f"ip link add {macvlan} link {vxlan} address {mac} type macvlan mode bridge"),
        ("DeleteEndpoint", f"ip link delete dev {macvlan}"),
        ("DeleteNetwork", f"ip link delete dev {vxlan}"),  # it outlived its last container
    ]
    assert all(r["endpoint"] == endpoint_id for r in records if r["rpc"] in ("Join",))
    for rpc, line in ran:
        assert shlex.split(line)[0] == "ip"  # each line is a command a shell can replay
    assert f"run ip link add {vxlan} type vxlan id 47" in host.plugin_log()


def test_explain_prints_what_join_runs(host):
    done = host.run_in_ns([host.lab.python, "-m", "vxlan", "explain", "-o", "VxlanId=48",
                           "-o", "Group=239.1.1.48", "--vtepdev", "eth0",
                           "--network-id", "c" * 64])
    lines = done.stdout.splitlines()
    assert ("ip link add vx_cccccccccccc type vxlan id 48 dev eth0 group 239.1.1.48 "
            "dstport 4789") in lines
    refused = host.run_in_ns([host.lab.python, "-m", "vxlan", "explain", "-o", "VxlanId=48",
                              "-o", "VtepDev=eth9"], check=False)
    assert refused.returncode == 1 and "VtepDev=eth9: no such device" in refused.stderr
    assert plugin_links(host) == []


def test_dual_stack_gateways(host, cleanup):
    assert create_network(host, cleanup, "dual", "-o", "VxlanId=49", "--ipv6",
                          "--subnet", "10.49.0.0/24", "--gateway", "10.49.0.254",
                          "--subnet", "fd49::/64", "--gateway", "fd49::fe").returncode == 0
    run_detached(host, cleanup, "dual1", "dual")
    assert "default via 10.49.0.254" in in_container(host, "dual1", "ip route")
    assert "default via fd49::fe" in in_container(host, "dual1", "ip -6 route")
    addresses = host.run_in_ns("ip -j addr").stdout
    assert "10.49.0.254" not in addresses and "fd49::fe" not in addresses
