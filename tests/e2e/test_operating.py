"""The operator's view on a real Docker engine (one lab host): `status` names
every container on every vxlan network and finds what was changed by hand, with
repair commands that work, whether the plugin runs or not; and what `explain`
prints is what a network's whole life runs, command for command."""

import json
import shlex

import pytest

from demo import network_field, plugin_links  # scripts/demo.py
from lab import IMAGE  # scripts/lab.py
from tests.e2e.conftest import PLUGIN_FLAGS

PEERS = "192.0.2.11,192.0.2.99"  # the lab host's own address, and a peer nobody has


def vxlan_cli(host, *args, check=True):
    return host.run_in_ns(["env", f"DOCKER_HOST={host.docker_host}", host.lab.python, "-m",
                           "vxlan", *args], check=check, timeout=120)


def status(host):
    """(exit status of --check, report) of `status --json` as the plugin's flags give it."""
    done = vxlan_cli(host, "status", "--state-dir", host.plugin_state_dir, "-vtepdev", "eth0",
                     "--json", "--check", check=False)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert done.returncode == (1 if report["drift"] else 0)
    return report


def repair(host, drift):
    for item in drift:
        for command in item["repair"]:
            argv = shlex.split(command)
            if argv[0] == "docker":
                host.docker(*argv[1:])
            else:
                host.run_in_ns(argv)


def create_network(host, cleanup, name, *args):
    cleanup["networks"].append(name)
    host.docker("network", "create", "-d", "vxlan", *args, name)
    return host.docker("network", "inspect", "-f", "{{.Id}}", name).stdout.strip()


def run(host, cleanup, name, network):
    cleanup["containers"].append(name)
    host.docker("run", "-d", "--name", name, "--net", network, IMAGE, "sleep", "600")
    return {field: network_field(host, name, network, field)
            for field in ("EndpointID", "IPAddress", "MacAddress")}


def container_pid(host, name):
    return host.docker("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()


def test_status_names_every_container_and_finds_drift_by_hand(host, cleanup):
    networks = {
        "opsgroup": create_network(host, cleanup, "opsgroup", "-o", "VxlanId=60", "-o",
                                   "Group=239.1.1.60", "-o", "vxlanMTU=1400",
                                   "--subnet", "10.60.0.0/24"),
        "opspeers": create_network(host, cleanup, "opspeers", "-o", "VxlanId=61", "-o",
                                   f"Peers={PEERS}", "--subnet", "10.61.0.0/24"),
    }
    containers = {name: (network, run(host, cleanup, name, network))
                  for name, network in (("g1", "opsgroup"), ("g2", "opsgroup"),
                                        ("g3", "opsgroup"), ("p1", "opspeers"))}
    report = status(host)
    assert report["docker"] == "ok" and report["drift"] == []
    by_name = {network["name"]: network for network in report["networks"]}
    assert {name: by_name[name]["id"] for name in networks} == networks
    assert by_name["opsgroup"]["vxlan"]["mtu"] == 1400 and by_name["opsgroup"]["containers"] == 3
    assert by_name["opspeers"]["flood"] == ["192.0.2.99"]
    seen = {endpoint["container"]["name"]: (network["name"], endpoint)
            for network in report["networks"] for endpoint in network["endpoints"]}
    assert set(seen) == set(containers)
    for name, (network, docker_says) in containers.items():
        shown_on, endpoint = seen[name]
        assert shown_on == network
        assert endpoint["id"] == docker_says["EndpointID"]
        assert endpoint["mac"] == docker_says["MacAddress"]
        assert endpoint["pid"] == int(container_pid(host, name))
        assert endpoint["interface"]["name"] == "eth0"
        assert endpoint["interface"]["addresses"] == [docker_says["IPAddress"] + "/24"]
        assert endpoint["interface"]["mtu"] == (1400 if network == "opsgroup" else 1450)
        assert endpoint["handed_over"] is True
    vx_group = by_name["opsgroup"]["vxlan"]["name"]

    # a setting of the vxlan changed by hand
    host.run_in_ns(["ip", "link", "set", "dev", vx_group, "mtu", "1300"])
    [item] = status(host)["drift"]
    assert item["what"] == (f"network opsgroup: vxlan {vx_group}: mtu is 1300, its options "
                            "say 1400")
    assert item["repair"] == [f"ip link set dev {vx_group} mtu 1400"]
    repair(host, [item])
    assert status(host)["drift"] == []

    # a container's interface deleted, and one put on another parent
    host.run_in_ns(["nsenter", "-t", container_pid(host, "g1"), "-n",
                    "ip", "link", "delete", "dev", "eth0"])
    g2_pid, g2_mac = container_pid(host, "g2"), containers["g2"][1]["MacAddress"]
    host.run_in_ns(["nsenter", "-t", g2_pid, "-n", "ip", "link", "delete", "dev", "eth0"])
    host.run_in_ns(["ip", "link", "add", "impostor", "link", "eth0", "address", g2_mac,
                    "type", "macvlan", "mode", "bridge"])
    host.run_in_ns(["ip", "link", "set", "dev", "impostor", "netns", g2_pid, "name", "eth0"])
    drift = status(host)["drift"]
    assert sorted((item["what"].split(" (")[0], item["repair"]) for item in drift) == [
        ("container g1 on opsgroup has no interface with MAC "
         + containers["g1"][1]["MacAddress"], ["docker restart g1"]),
        ("container g2 on opsgroup: its interface eth0", ["docker restart g2"]),
    ]
    [impostor] = [item["what"] for item in drift if item["what"].startswith("container g2")]
    assert impostor.startswith(f"container g2 on opsgroup: its interface eth0 (MAC {g2_mac}) "
                               f"is not a bridge-mode macvlan on vxlan {vx_group} (macvlan on "
                               "link index ")
    repair(host, drift)
    assert status(host)["drift"] == []

    # a marked vxlan of a network that neither the plugin nor Docker knows
    host.run_in_ns(["ip", "link", "add", "vxstray", "type", "vxlan", "id", "62",
                    "dstport", "4789"])
    host.run_in_ns(["ip", "link", "set", "dev", "vxstray", "alias",
                    "docker-vxlan-plugin:" + "f" * 64])
    [item] = status(host)["drift"]
    assert item["repair"] == ["ip link delete dev vxstray"]
    repair(host, [item])

    # the vxlan deleted by hand, with the plugin stopped
    host.stop_plugin()
    host.run_in_ns(["ip", "link", "delete", "dev", vx_group])
    report = status(host)
    assert {e["container"]["name"] for n in report["networks"] for e in n["endpoints"]} == set(
        containers)
    assert sorted(item["what"].split(" (")[0] for item in report["drift"]) == [
        *(f"container {name} on opsgroup has no interface with MAC {docker_says['MacAddress']}"
          for name, (_, docker_says) in sorted(containers.items()) if name != "p1"),
        f"network opsgroup: its vxlan {vx_group} is missing"]
    host.start_plugin(PLUGIN_FLAGS)
    for name in ("g1", "g2", "g3"):  # the plugin makes the vxlan anew at the first Join
        host.docker("restart", name)
    assert status(host)["drift"] == []
    table = vxlan_cli(host, "status", "--state-dir", host.plugin_state_dir, "-vtepdev",
                      "eth0").stdout
    for name in containers:
        assert f"\n  {name} " in table


def explained(host, options, network_id, endpoints):
    """[(step, [command])] of `explain` for the network and its two endpoints."""
    args = ["explain", "--vtepdev", "eth0", "--network-id", network_id]
    for key_value in options:
        args += ["-o", key_value]
    for endpoint in endpoints:
        args += ["--endpoint-id", endpoint["EndpointID"], "--address", endpoint["IPAddress"]]
    steps = []
    for line in vxlan_cli(host, *args).stdout.splitlines():
        if line.startswith("# "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


@pytest.mark.parametrize("options", [
    ["VxlanId=63", "Group=239.1.1.63", "vxlanMTU=1400", "TTL=8", "Learning=false"],
    ["VxlanId=64", f"Peers={PEERS}", "Port=4790"],
], ids=["group", "peers"])
def test_explain_prints_what_a_network_life_runs(host, cleanup, options):
    args = [arg for option in options for arg in ("-o", option)]
    network_id = create_network(host, cleanup, "lifeline", *args, "--subnet", "10.63.0.0/24")
    first = run(host, cleanup, "life1", "lifeline")
    further = run(host, cleanup, "life2", "lifeline")
    host.docker("rm", "-f", "life2")
    host.docker("rm", "-f", "life1")
    host.docker("network", "rm", "lifeline")

    steps = explained(host, options, network_id, [first, further])
    assert [step for step, _ in steps] == [
        "docker network create: nothing runs; the options are checked and kept",
        "first container on this host (Join)", "each further container (Join)",
        "after each Join's answer, in the background: frames the plugin sends itself, "
        "not a command (--no-announce: none)",
        "a container leaves (Leave): Docker moves its macvlan back; nothing runs",
        "a container is removed (DeleteEndpoint): just after the answer",
        "the last container here is removed (DeleteEndpoint): just after the answer",
        "no container here for --vxlan-linger seconds (60 by default; with 0, in the last "
        "DeleteEndpoint): in the background",
        "docker network rm, if a vxlan is still here (DeleteNetwork)"]
    wanted = [command for _, commands in steps[1:3] + steps[5:7] for command in commands]
    # the vxlan goes once, by the linger timer or by DeleteNetwork: the same command
    assert steps[7][1] == steps[8][1]
    wanted += steps[8][1]
    ran = [record["cmd"] for record in host.audit_records()
           if record.get("network") == network_id and record["event"] == "result"
           and record["status"] == "ok" and "show" not in record["cmd"].split()
           and not record["cmd"].startswith("announce ")]
    assert ran == wanted
    announced = {record["cmd"] for record in host.audit_records()
                 if record.get("network") == network_id
                 and record["cmd"].startswith("announce ")}
    assert steps[3][1][0] in announced  # the further container's, as explain printed it
    assert plugin_links(host) == []
