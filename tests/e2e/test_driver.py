"""The driver's user story on each Docker engine the suite runs (20.10, 26
and 28: conftest.ENGINES), on one lab host: create a network, run containers
that reach each other, refuse bad options, honour --mac-address and MTU, two
networks at once, dual stack and IPv6-only, connect and disconnect, restarts,
nothing left after removal, and the command log holding the exact commands;
then one ping across two hosts."""

import json
import shlex

import pytest

import demo  # scripts/demo.py
from demo import plugin_links
from lab import IMAGE, PLUGIN_SOCKET  # scripts/lab.py
from tests import rpc
from tests.wait import wait_for

# linger 0: these tests look at the vxlan going with its last container
# (test_linger.py has the default)
PLUGIN_ARGS = ["-vtepdev", "eth0", "--vxlan-linger", "0"]
FORWARDING_WARNING = "WARNING: IPv4 forwarding is disabled. Networking will not work."


@pytest.fixture(scope="module")
def host(engine_lab2):
    host = engine_lab2.hosts[0]
    host.start_plugin(PLUGIN_ARGS)
    try:
        yield host
    finally:
        host.stop_plugin()


def engine(host):
    """The major version of host's Docker Engine (20, 26, 28)."""
    return int(host.server_version.split(".")[0])


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
    # Engine 28 without its iptables rules warns on every run; the ping above
    # shows it is harmless: the macvlans are bridged, nothing is routed by the host
    assert (FORWARDING_WARNING in ping.stderr) == (engine(host) >= 28), ping.stderr

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
    requested = [r for r in records if "rpc" in r]
    ran = [(r["rpc"], r["cmd"]) for r in requested if r["event"] == "result"
           and r["status"] == "ok" and not r["cmd"].startswith("ip -d -j")]
    mac = container["NetworkSettings"]["Networks"]["logged"]["MacAddress"]
    address = container["NetworkSettings"]["Networks"]["logged"]["IPAddress"]
    assert ran == [
        ("Join", f"ip link add {vxlan} type vxlan id 47 dev eth0 dstport 4789"),
        ("Join", f"ip link set dev {vxlan} alias docker-vxlan-plugin:{network_id} up"),
        ("Join", f"ip link add {macvlan} link {vxlan} address {mac} type macvlan mode bridge"),
        ("DeleteEndpoint", f"ip link delete dev {macvlan}"),
        ("DeleteEndpoint", f"ip link delete dev {vxlan}"),  # --vxlan-linger 0 here
    ]
    assert all(r["endpoint"] == endpoint_id for r in requested if r["rpc"] in ("Join",))
    for rpc, line in ran:
        assert shlex.split(line)[0] == "ip"  # each line is a command a shell can replay
    # and, after the Join's answer, its announcement: no RPC, a cause, no shell command
    # (its result comes once its rounds end, at the latest 1 s after the Join)
    def announcement():
        found = [r for r in host.audit_records()
                 if r.get("network") == network_id and "rpc" not in r]
        return found if len(found) == 2 else None
    announced = wait_for(announcement, what="the announcement's result")
    assert [(r["event"], r["cmd"], r["endpoint"]) for r in announced] == [
        (event, f"announce {address} from {mac} on {vxlan} (gratuitous ARP; 3 times in 1 s)",
         endpoint_id) for event in ("run", "result")]
    assert announced[1]["status"] == "ok" and announced[1]["cause"].startswith(
        "after Join")
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


def test_ipv6_only_network(host, cleanup):
    """--ipv4=false (engine 28): addresses and the default route from the
    IPv6 subnet only, and a MAC that stays when the container restarts."""
    if engine(host) < 28:
        pytest.skip(f"Engine {host.server_version} has no IPv6-only networks (28 has)")
    assert create_network(host, cleanup, "v6only", "-o", "VxlanId=50", "--ipv4=false",
                          "--ipv6", "--subnet", "fd50::/64", "--gateway", "fd50::fe"
                          ).returncode == 0
    a = run_detached(host, cleanup, "v6a", "v6only")["NetworkSettings"]["Networks"]["v6only"]
    b = run_detached(host, cleanup, "v6b", "v6only")["NetworkSettings"]["Networks"]["v6only"]
    assert a["IPAddress"] == "" and a["GlobalIPv6Address"].startswith("fd50::")
    assert "inet " not in in_container(host, "v6a", "ip -4 addr show dev eth0")
    assert "default via fd50::fe dev eth0" in in_container(host, "v6a", "ip -6 route")
    ping = host.docker("exec", "v6a", "ping", "-c1", "-W2", b["GlobalIPv6Address"], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    mac = in_container(host, "v6a", "cat /sys/class/net/eth0/address").strip()
    assert mac == a["MacAddress"] and int(mac[:2], 16) & 0b11 == 0b10  # locally administered
    assert mac != b["MacAddress"]

    host.docker("restart", "-t", "0", "v6a")
    again = inspect(host, "v6a")["NetworkSettings"]["Networks"]["v6only"]
    assert again["EndpointID"] != a["EndpointID"]  # a new endpoint: the MAC is not from its ID
    assert (again["GlobalIPv6Address"], again["MacAddress"]) == (a["GlobalIPv6Address"], mac)
    ping = host.docker("exec", "v6b", "ping", "-c1", "-W2", a["GlobalIPv6Address"], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    host.docker("rm", "-f", "v6a", "v6b")
    host.docker("network", "rm", "v6only")
    assert plugin_links(host) == []


def test_container_restart_keeps_address_and_mac(host, cleanup):
    assert create_network(host, cleanup, "again", "-o", "VxlanId=51",
                          "--subnet", "10.51.0.0/24").returncode == 0
    before = run_detached(host, cleanup, "again1", "again")["NetworkSettings"]["Networks"]["again"]
    run_detached(host, cleanup, "again2", "again")
    host.docker("restart", "-t", "0", "again1")
    after = inspect(host, "again1")["NetworkSettings"]["Networks"]["again"]
    assert (after["IPAddress"], after["MacAddress"]) == (before["IPAddress"], before["MacAddress"])
    ping = host.docker("exec", "again2", "ping", "-c1", "-W2", after["IPAddress"], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_interface_name_is_refused(host, cleanup):
    """A name for the container's interface cannot be honoured by a remote
    driver: the request fails and says so, instead of giving eth<N> silently."""
    assert create_network(host, cleanup, "named", "-o", "VxlanId=52",
                          "--subnet", "10.52.0.0/24").returncode == 0
    assert create_network(host, cleanup, "other", "-o", "VxlanId=53",
                          "--subnet", "10.53.0.0/24").returncode == 0
    run_detached(host, cleanup, "named1", "other")
    message = ("driver option com.docker.network.endpoint.ifname=foo: the vxlan driver cannot "
               "name the container's interface")
    refused = host.docker("network", "connect", "--driver-opt",
                          "com.docker.network.endpoint.ifname=foo", "named", "named1", check=False)
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr
    if engine(host) >= 28:   # the option of --network's long form
        cleanup["containers"].append("named2")
        refused = host.docker("run", "-d", "--name", "named2", "--network",
                              "name=named,driver-opt=com.docker.network.endpoint.ifname=foo",
                              IMAGE, "sleep", "600", check=False)
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr
    assert in_container(host, "named1", "ls /sys/class/net").split() == ["eth0", "lo"]
    network_id = host.docker("network", "inspect", "-f", "{{.Id}}", "other").stdout.strip()
    assert plugin_links(host) == ["vx_" + network_id[:12]]  # nothing made for "named"


def test_connect_disconnect_and_external_connectivity(host, cleanup):
    """A second network connected to a running container and the first one
    disconnected; the engine sends Program/RevokeExternalConnectivity as the
    gateway moves, and engine 29's order (a Revoke first, repeated) is sent
    here by hand: each answers, and nothing changes for the container."""
    for vni in (54, 55):
        assert create_network(host, cleanup, f"net{vni}", "-o", f"VxlanId={vni}",
                              "--subnet", f"10.{vni}.0.0/24",
                              "--gateway", f"10.{vni}.0.254").returncode == 0
    run_detached(host, cleanup, "moving", "net54")
    peer = run_detached(host, cleanup, "peer55", "net55")["NetworkSettings"]["Networks"]["net55"]
    host.docker("network", "connect", "net55", "moving")
    assert in_container(host, "moving", "ls /sys/class/net").split() == ["eth0", "eth1", "lo"]
    assert host.docker("exec", "moving", "ping", "-c1", "-W2", peer["IPAddress"],
                       check=False).returncode == 0
    host.docker("network", "disconnect", "net54", "moving")
    assert in_container(host, "moving", "ls /sys/class/net").split() == ["eth1", "lo"]
    assert "default via 10.55.0.254 dev eth1" in in_container(host, "moving", "ip route")
    net55 = host.docker("network", "inspect", "-f", "{{.Id}}", "net55").stdout.strip()
    assert plugin_links(host) == ["vx_" + net55[:12]]   # net54's vxlan went with its endpoint

    moving = inspect(host, "moving")["NetworkSettings"]["Networks"]["net55"]
    socket = f"/proc/{host.dockerd_pid}/root{PLUGIN_SOCKET}"
    endpoint = {"NetworkID": net55, "EndpointID": moving["EndpointID"]}
    for method in ("Revoke", "Revoke", "Program", "Program", "Revoke"):
        answer = rpc.call(socket, f"NetworkDriver.{method}ExternalConnectivity", endpoint)
        assert answer == (200, {}), method
    ping = host.docker("exec", "peer55", "ping", "-c1", "-W2", moving["IPAddress"], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "ExternalConnectivity failed" not in host.plugin_log()
    host.docker("rm", "-f", "moving", "peer55")
    host.docker("network", "rm", "net54", "net55")
    assert plugin_links(host) == []


def test_plugin_and_dockerd_restarts(host, cleanup):
    """The plugin restarted under a running container, then dockerd restarted
    (it stops and brings back a --restart=always container): the container
    is reachable after each, and a new one joins."""
    assert create_network(host, cleanup, "boot", "-o", "VxlanId=56",
                          "--subnet", "10.56.0.0/24").returncode == 0
    cleanup["containers"] += ["boot1", "boot2", "boot3"]
    host.docker("run", "-d", "--name", "boot1", "--restart", "always", "--net", "boot",
                IMAGE, "sleep", "600")
    run_detached(host, cleanup, "boot2", "boot")
    address = demo.network_field(host, "boot1", "boot")

    host.stop_plugin()
    host.start_plugin(PLUGIN_ARGS)
    assert host.docker("exec", "boot2", "ping", "-c1", "-W2", address,
                       check=False).returncode == 0

    host.restart_dockerd()
    wait_for(lambda: demo.network_field(host, "boot1", "boot"), 60,
             "boot1 to be back on its network")
    address = demo.network_field(host, "boot1", "boot")
    run_detached(host, cleanup, "boot3", "boot")
    ping = host.docker("exec", "boot3", "ping", "-c1", "-W2", address, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    host.docker("rm", "-f", "boot1", "boot2", "boot3")
    host.docker("network", "rm", "boot")
    assert plugin_links(host) == []


def test_containers_ping_across_two_hosts(engine_lab2, host):
    h1, h2 = engine_lab2.hosts
    h2.start_plugin(PLUGIN_ARGS)
    try:
        with demo.network([h1, h2], "across", "10.57.0.0/24",
                          lambda h: {"VxlanId": 57, "Group": "239.1.1.57"}):
            a1 = demo.run_container(h1, "across1", "across")
            a2 = demo.run_container(h2, "across2", "across")
            for h, container, address in ((h1, "across1", a2), (h2, "across2", a1)):
                ping = demo.ping(h, container, address)
                assert ping.returncode == 0, ping.stdout + ping.stderr
        assert plugin_links(h1) == plugin_links(h2) == []
    finally:
        h2.stop_plugin()
