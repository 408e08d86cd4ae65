"""The operator's tools against the real plugin and kernel: `status` (no drift
for what the plugin made, drift made by hand found with repairs that work),
`replay` of an audit log in a fresh namespace, and the audit log through
logrotate, SIGHUP and a full disk."""

import glob
import gzip
import json
import os
import shlex
import signal
import subprocess
import sys

import pytest

from tests.kernel.conftest import (EVERY_OPTION, REPO, Netns, Plugin, create_and_join,
                                   endpoint_request, join)
from tests.rpc import new_id
from tests.wait import wait_for

# 192.0.2.1 is the namespace's own address: no host floods to itself
PEERS = {"VxlanId": "43", "Peers": "192.0.2.2,192.0.2.1,192.0.2.3", "vxlanMTU": "1400",
         "TTL": "5"}


def vxlan_cli(plugin, *args, check=False):
    """`python -m vxlan ARGS` in the plugin's namespace, with no Docker to ask."""
    env = {**os.environ, "DOCKER_HOST": "unix://" + os.path.join(plugin.workdir, "no-docker")}
    done = subprocess.run(["ip", "netns", "exec", plugin.netns.name, sys.executable, "-m",
                           "vxlan", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert not check or done.returncode == 0, done.stderr
    return done


def status(plugin, *flags):
    """(exit status, report) of `status --json`, with the plugin's flags."""
    done = vxlan_cli(plugin, "status", "--state-dir", plugin.state_dir, "--vtepdev", "eth0",
                     "--json", *flags)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def drift(plugin):
    code, report = status(plugin, "--check")
    assert code == (1 if report["drift"] else 0)
    return report["drift"]


def repair(netns, items):
    """Runs every repair command of the drift ITEMS in the namespace."""
    for item in items:
        for command in item["repair"]:
            subprocess.run(["ip", "netns", "exec", netns.name, *shlex.split(command)],
                           check=True, capture_output=True, text=True)


def test_what_the_plugin_made_is_no_drift(plugin, netns):
    full, _, _, _ = create_and_join(plugin, EVERY_OPTION)
    peers, endpoint, created, _ = create_and_join(plugin, PEERS)
    peers6, _, _, _ = create_and_join(plugin, {"VxlanId": "44", "Peers": "2001:db8::2"})
    code, report = status(plugin, "--check")
    assert code == 0 and report["drift"] == []
    assert report["docker"].startswith("unreachable: ")
    assert report["state_dir"] == plugin.state_dir
    by_id = {network["id"]: network for network in report["networks"]}
    assert set(by_id) == {full, peers, peers6}
    assert by_id[full]["vxlan"] == {"name": "vxall", "exists": True, "up": True, "mtu": 1400,
                                    "ifindex": netns.link("vxall")["ifindex"]}
    assert (by_id[full]["vni"], by_id[full]["port"], by_id[full]["group"]) == (
        42, 4790, "239.1.1.1")
    assert by_id[peers]["flood"] == ["192.0.2.2", "192.0.2.3"]
    assert by_id[peers6]["flood"] == ["2001:db8::2"]
    [entry] = by_id[peers]["endpoints"]
    assert (entry["id"], entry["mac"], entry["container"]) == (
        endpoint, created["Interface"]["MacAddress"], None)
    table = vxlan_cli(plugin, "status", "--state-dir", plugin.state_dir, "--vtepdev", "eth0",
                      check=True).stdout
    assert "vx_" + peers[:12] in table and "drift: none" in table


def test_drift_made_by_hand_is_found_and_its_repair_works(plugin, netns):
    peers, first, _, _ = create_and_join(plugin, PEERS)
    group, _, _, _ = create_and_join(plugin, {"VxlanId": "45", "Group": "239.1.1.45"},
                                     address="10.45.0.2/24")
    vx_peers, vx_group = "vx_" + peers[:12], "vx_" + group[:12]
    assert drift(plugin) == []

    # settings changed in place
    netns.ip("link", "set", "dev", vx_peers, "mtu", "1300")
    netns.ip("link", "set", "dev", vx_peers, "type", "vxlan", "ttl", "9")
    found = drift(plugin)
    assert [item["what"] for item in found] == [
        f"network {peers[:12]}: vxlan {vx_peers}: mtu is 1300, its options say 1400",
        f"network {peers[:12]}: vxlan {vx_peers}: ttl is 9, its options say 5; made anew, it "
        "takes the containers' interfaces with it: restart them after"]
    assert found[0]["repair"] == [f"ip link set dev {vx_peers} mtu 1400"]
    assert found[1]["repair"][0] == f"ip link delete dev {vx_peers}"
    assert found[1]["repair"][1].startswith(f"ip link add {vx_peers} mtu 1400 type vxlan id 43")
    repair(netns, found)
    assert drift(plugin) == []
    assert netns.link(vx_peers)["linkinfo"]["info_data"]["ttl"] == 5

    # flood entries, a vxlan down, links nobody owns
    netns.ip("link", "add", "macvlan_" + first[:7], "link", vx_peers, "type", "macvlan",
             "mode", "bridge")  # the endpoint's, gone with the vxlan made anew
    subprocess.run(["bridge", "-n", netns.name, "fdb", "del", "00:00:00:00:00:00", "dev",
                    vx_peers, "dst", "192.0.2.3"], check=True)
    subprocess.run(["bridge", "-n", netns.name, "fdb", "append", "00:00:00:00:00:00", "dev",
                    vx_peers, "dst", "192.0.2.9"], check=True)
    netns.ip("link", "set", "dev", vx_group, "down")
    stray = new_id()
    netns.ip("link", "add", "vxstray", "type", "vxlan", "id", "99", "dstport", "4789")
    netns.ip("link", "set", "dev", "vxstray", "alias", "docker-vxlan-plugin:" + stray)
    netns.ip("link", "add", "macvlan_stray", "link", vx_group, "type", "macvlan", "mode",
             "bridge")
    found = drift(plugin)
    assert sorted((item["what"], tuple(item["repair"])) for item in found) == sorted([
        (f"network {peers[:12]}: vxlan {vx_peers} does not flood to peer 192.0.2.3",
         (f"bridge fdb append 00:00:00:00:00:00 dev {vx_peers} dst 192.0.2.3",)),
        (f"network {peers[:12]}: vxlan {vx_peers} floods to 192.0.2.9, not one of its Peers",
         (f"bridge fdb del 00:00:00:00:00:00 dev {vx_peers} dst 192.0.2.9",)),
        (f"network {group[:12]}: vxlan {vx_group} is down",
         (f"ip link set dev {vx_group} alias docker-vxlan-plugin:{group} up",)),
        (f"vxlan vxstray is marked for network {stray[:12]}, of which the plugin has no "
         "record (Docker could not be asked)", ()),  # deleted only when Docker says so
        (f"macvlan macvlan_stray on {vx_group} belongs to no endpoint",
         ("ip link delete dev macvlan_stray",)),
    ])
    repair(netns, found)
    netns.ip("link", "delete", "dev", "vxstray")
    assert drift(plugin) == []
    assert netns.flood_destinations(vx_peers) == ["192.0.2.2", "192.0.2.3"]

    # the vxlan deleted
    netns.ip("link", "delete", "dev", vx_group)
    found = drift(plugin)
    assert [item["what"] for item in found] == [
        f"network {group[:12]}: its vxlan {vx_group} is missing (deleted by hand?); the "
        "containers' interfaces on it went with it"]
    repair(netns, found)
    assert drift(plugin) == []
    assert netns.link(vx_group)["linkinfo"]["info_data"]["group"] == "239.1.1.45"


def test_status_works_while_the_plugin_is_stopped_and_touches_nothing(plugin, netns):
    network_id, endpoint_id, _, _ = create_and_join(plugin, PEERS)
    _, running = status(plugin)
    plugin.stop()
    interrupted = os.path.join(plugin.state_dir, "networks", ".tmp-interrupted")
    open(interrupted, "w").close()  # what a save in progress looks like
    _, stopped = status(plugin)
    assert stopped == running and stopped["drift"] == []
    assert os.path.exists(interrupted)
    missing = vxlan_cli(plugin, "status", "--state-dir", "/nonexistent", "--json", check=True)
    report = json.loads(missing.stdout)
    assert report["state_dir"] == "/nonexistent (missing)"
    # its vxlan is marked, but there is no record of it, and no Docker to ask:
    # nothing is deleted on the strength of an absence in the records alone
    macvlan = "macvlan_" + endpoint_id[:7]
    assert [(item["what"], item["repair"]) for item in report["drift"]] == [
        (f"vxlan vx_{network_id[:12]} is marked for network {network_id[:12]}, of which the "
         "plugin has no record (Docker could not be asked)", []),
        # in this namespace, so in no container: the plugin deletes such at its start
        (f"macvlan {macvlan} on vx_{network_id[:12]} belongs to no endpoint",
         [f"ip link delete dev {macvlan}"])]
    # without the plugin's -vtepdev, a Group network's record cannot be read: said, not fatal
    plugin.start()
    group, _, _, _ = create_and_join(plugin, {"VxlanId": "49", "Group": "239.1.1.49"})
    done = vxlan_cli(plugin, "status", "--state-dir", plugin.state_dir, "--check")
    assert done.returncode == 1
    assert (f"network {group[:12]}: its record cannot be read (option Group=239.1.1.49 needs a "
            "VTEP device") in done.stdout
    assert "give status the plugin's --vtepdev" in done.stdout


# --- replay --------------------------------------------------------------------------

def link_summary(netns):
    """What the links are, without what the kernel picks (indexes, random MACs)."""
    links = json.loads(netns.ip("-d", "-j", "link", "show").stdout)
    summary = {}
    for link in links:
        info = link.get("linkinfo", {})
        summary[link["ifname"]] = (
            info.get("info_kind"), link.get("ifalias"), link["mtu"], link.get("link"),
            "UP" in link["flags"], json.dumps(info.get("info_data"), sort_keys=True),
            link["address"] if info.get("info_kind") == "macvlan" else None)
    return summary


def test_replay_rebuilds_the_links_of_a_run_in_a_fresh_namespace(plugin, netns):
    full, _, _, _ = create_and_join(plugin, EVERY_OPTION)
    peers, _, _, _ = create_and_join(plugin, PEERS)
    second = new_id()
    plugin.ok("CreateEndpoint", endpoint_request(peers, second, "10.42.0.3/24"))
    join(plugin, peers, second)
    plugin.delete_endpoint(full, plugin_endpoints(plugin, full))
    gone, _, _, _ = create_and_join(plugin, {"VxlanId": "46"})  # a whole life, then deleted
    plugin.ok("DeleteNetwork", {"NetworkID": gone})
    wanted = link_summary(netns)
    flood = netns.flood_destinations("vx_" + peers[:12])

    fresh = Netns()
    try:
        assert link_summary(fresh) != wanted
        env = {**os.environ, "PYTHONPATH": REPO}
        dry = subprocess.run(["ip", "netns", "exec", fresh.name, sys.executable, "-m", "vxlan",
                              "replay", "--dry-run", plugin.audit_log],
                             env=env, capture_output=True, text=True, check=True)
        assert dry.stdout.splitlines()[0].startswith("ip link add vxall mtu 1400")
        assert link_summary(fresh) == {name: wanted[name] for name in ("lo", "eth0")}
        done = subprocess.run(["ip", "netns", "exec", fresh.name, sys.executable, "-m", "vxlan",
                               "replay", plugin.audit_log],
                              env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert link_summary(fresh) == wanted
        assert fresh.flood_destinations("vx_" + peers[:12]) == flood
    finally:
        fresh.delete()


def plugin_endpoints(plugin, network_id):
    """The one endpoint of NETWORK_ID in the plugin's state."""
    folder = os.path.join(plugin.state_dir, "endpoints")
    [endpoint] = [name[:-5] for name in os.listdir(folder)
                  if json.load(open(os.path.join(folder, name)))["network"] == network_id]
    return endpoint


# --- the audit log as admins run it --------------------------------------------------------

def shipped_logrotate(plugin):
    """scripts/logrotate/docker-vxlan-plugin, for the test's audit log and plugin."""
    with open(os.path.join(REPO, "scripts", "logrotate", "docker-vxlan-plugin")) as f:
        text = f.read()
    return (text.replace("/var/log/docker-vxlan-plugin/*.jsonl", plugin.audit_log)
            .replace("systemctl kill --kill-whom=main --signal=HUP docker-vxlan-plugin.service",
                     f"kill -HUP {plugin.process.pid}"))


COPYTRUNCATE = """{path} {{
    rotate 5
    copytruncate
    missingok
}}
"""


def logrotate(plugin, config):
    path = os.path.join(plugin.workdir, "logrotate.conf")
    with open(path, "w") as f:
        f.write(config)
    subprocess.run(["logrotate", "-f", "-s", os.path.join(plugin.workdir, "logrotate.state"),
                    path], check=True, capture_output=True, text=True)


def audit_lines(plugin):
    """Every line of the audit log and its rotated files (.N, .N.gz), oldest first."""
    lines = []
    rotated = glob.glob(plugin.audit_log + ".*")
    for path in sorted(rotated, key=lambda p: -int(p.split(".jsonl.")[1].split(".")[0])):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            lines += f.read().splitlines()
    with open(plugin.audit_log) as f:
        lines += f.read().splitlines()
    return lines


def command_log(plugin):
    """The ip/bridge commands of the command log as the plugin printed it (the
    human log): what the audit log must hold, record for record. (Announcements,
    whose line holds parentheses, are checked in test_announce.py.)"""
    return [line.split(" vxlan.commands: ", 1)[1].split(" [")[0].split(" (")[0]
            for line in plugin.log().splitlines()
            if " vxlan.commands: " in line and " announce " not in line]


def as_logged(record):
    status = record.get("status")
    return f"run {record['cmd']}" if record["event"] == "run" else (
        f"ok  {record['cmd']}" if status == "ok" else f"{status} {record['cmd']}")


def a_network_life(plugin):
    network_id, endpoint_id, _, _ = create_and_join(plugin, {"VxlanId": "47"})
    plugin.delete_endpoint(network_id, endpoint_id)
    plugin.ok("DeleteNetwork", {"NetworkID": network_id})


@pytest.mark.parametrize("rotation", ["shipped snippet", "create", "copytruncate"])
def test_the_audit_log_keeps_every_line_through_logrotate(plugin, rotation):
    config = {"shipped snippet": shipped_logrotate(plugin),
              "create": shipped_logrotate(plugin).replace("nocreate", "create 0600 root root"),
              "copytruncate": COPYTRUNCATE.format(path=plugin.audit_log)}[rotation]
    for _ in range(3):
        a_network_life(plugin)
        logrotate(plugin, config)
        assert plugin.process.poll() is None  # SIGHUP did not stop it
    a_network_life(plugin)
    lines = audit_lines(plugin)
    assert len(glob.glob(plugin.audit_log + ".*")) == 3
    assert [as_logged(record) for record in map(json.loads, lines)
            if not record["cmd"].startswith("announce ")] == command_log(plugin)
    assert len(lines) > 30


def test_sighup_reopens_the_audit_log_at_once(plugin):
    a_network_life(plugin)
    os.rename(plugin.audit_log, plugin.audit_log + ".1")
    plugin.process.send_signal(signal.SIGHUP)
    wait_for(lambda: os.path.exists(plugin.audit_log), what="the audit log made anew")
    opened = {os.path.realpath(f"/proc/{plugin.process.pid}/fd/{fd}")
              for fd in os.listdir(f"/proc/{plugin.process.pid}/fd")}
    assert plugin.audit_log in opened and plugin.audit_log + ".1" not in opened
    assert "SIGHUP: reopening the audit log" in plugin.log()
    assert plugin.process.poll() is None


def test_sighup_without_an_audit_log_does_not_stop_the_plugin(netns, workdir):
    plugin = Plugin(netns, workdir, ["--vtepdev", "eth0"])
    plugin.audit_log = ""  # `--audit-log ""`: none
    plugin.start()
    try:
        plugin.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP: no audit log to reopen" in plugin.log(), what="the SIGHUP")
        create_and_join(plugin, {"VxlanId": "50"})
        assert plugin.process.poll() is None and not os.path.exists(plugin.audit_log)
    finally:
        plugin.stop()


@pytest.fixture
def tiny_disk(workdir):
    """A 64 KiB tmpfs in WORKDIR/disk; unmounted after the test."""
    path = os.path.join(workdir, "disk")
    os.mkdir(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


def test_a_full_disk_loses_audit_records_loudly_and_fails_no_request(netns, workdir, tiny_disk):
    plugin = Plugin(netns, workdir, ["--vtepdev", "eth0", "--vxlan-linger", "0"])
    plugin.audit_log = os.path.join(tiny_disk, "audit.jsonl")
    plugin.start()
    try:
        filler = os.path.join(tiny_disk, "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1k"], capture_output=True)
        # the audit file's last page still takes records: fill it with requests
        for vni in range(100, 130):
            if "AUDIT LOG WRITE FAILED" in plugin.log():
                break
            create_and_join(plugin, {"VxlanId": str(vni)})
        network_id, endpoint_id, _, joined = create_and_join(plugin, {"VxlanId": "48"})
        macvlan = joined["InterfaceName"]["SrcName"]
        assert macvlan in netns.link_names()  # the request succeeded
        log = plugin.log()
        assert (f"AUDIT LOG WRITE FAILED ({plugin.audit_log}: [Errno 28] No space left on "
                f"device); this record is missing from it: run ip link add {macvlan}") in log
        assert f"ok  ip link add {macvlan} link vx_{network_id[:12]}" in log  # it ran
        os.unlink(filler)
        plugin.delete_endpoint(network_id, endpoint_id)
        records = plugin.audit()  # every line whole: json.loads would fail on half a one
        assert [r for r in records if r["cmd"].startswith("ip ")][-1]["cmd"] == (
            f"ip link delete dev vx_{network_id[:12]}")
        assert not any(r["cmd"].startswith(f"ip link add {macvlan}") for r in records)
        assert plugin.process.poll() is None
    finally:
        plugin.stop()
