"""Robustness on a real Docker engine: the plugin killed and restarted under
running containers, dockerd restarted with --restart=always containers in
every start order, many containers and networks at once, and a container
start that fails halfway leaving no link behind."""

import signal
import subprocess
import threading
import time

import pytest

from demo import network_field, plugin_links  # scripts/demo.py
from lab import IMAGE  # scripts/lab.py
from tests.wait import wait_for
# The vxlan goes with the last container here, as in the Go original, so that each
# test sees its links go (the default lingers: tests/e2e/test_linger.py).
PLUGIN_ARGS = ["--vtepdev", "eth0", "--vxlan-linger", "0"]


@pytest.fixture
def hosts(lab2):
    """Both lab hosts with the plugin running. Afterwards every container and
    network is removed (through the plugin), leftover links are deleted so the
    next test starts clean, and the plugins are stopped."""
    for host in lab2.hosts:
        host.start_plugin(PLUGIN_ARGS)
    try:
        yield lab2.hosts
    finally:
        for host in lab2.hosts:
            if not host.plugin_running():
                host.start_plugin(PLUGIN_ARGS)  # Docker needs it to remove endpoints
            containers = host.docker("ps", "-aq").stdout.split()
            if containers:
                host.docker("rm", "-f", *containers, check=False, timeout=180)
            networks = host.docker("network", "ls", "-q", "--filter", "driver=vxlan").stdout.split()
            if networks:
                host.docker("network", "rm", *networks, check=False)
            for name in plugin_links(host):
                host.run_in_ns(["ip", "link", "delete", "dev", name], check=False)
            host.stop_plugin()


def create_network(hosts, name, vxlan_id, subnet_prefix):
    """A network on every host, each host handing out its own slice of the
    /24; returns its ID on the first host."""
    ids = []
    for index, host in enumerate(hosts):
        ids.append(host.docker(
            "network", "create", "-d", "vxlan", "-o", f"VxlanId={vxlan_id}",
            "-o", f"Group=239.1.2.{vxlan_id % 256}", "--subnet", f"{subnet_prefix}.0/24",
            "--ip-range", f"{subnet_prefix}.{64 * (index + 1)}/26",
            "--gateway", f"{subnet_prefix}.254", name).stdout.strip())
    return ids[0]


def run(host, name, network, *args):
    """Starts a container; returns its address on the network."""
    host.docker("run", "-d", "--name", name, "--net", network, *args, IMAGE, "sleep", "600")
    return network_field(host, name, network)


def ping(host, container, target):
    done = host.docker("exec", container, "ping", "-c", "2", "-W", "3", target, check=False)
    assert done.returncode == 0, f"{container} -> {target}: {done.stdout}{done.stderr}"


def vxlans(host):
    return sorted(link["ifname"] for link in host.links()
                  if link.get("linkinfo", {}).get("info_kind") == "vxlan")


def wait_for_reconcile(host, starts_before):
    """Waits until the plugin started last has reconciled with Docker."""
    wait_for(lambda: host.plugin_log().count("reconciled:") > starts_before, 60,
             "the plugin to reconcile with Docker")


def commands(host, prefix, status):
    """Results in the audit log, with that status, of commands starting with prefix."""
    return [r for r in host.audit_records()
            if r["cmd"].startswith(prefix) and r.get("status") == status]


def failures(host, since):
    return [r for r in host.audit_records()[since:] if r.get("status", "ok") != "ok"]


def running(host):
    return host.docker("ps", "-q", "--filter", "status=running").stdout.split()


def in_parallel(calls, seconds=240):
    """Runs every call at once in threads; returns their results, in order, or
    raises the first error."""
    results = [None] * len(calls)

    def run_one(index, call):
        try:
            results[index] = call()
        except BaseException as error:  # handed to the test's thread below
            results[index] = error
    threads = [threading.Thread(target=run_one, args=(i, call), daemon=True)
               for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "calls still hang"
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


# --- restarts ---------------------------------------------------------------------

def test_plugin_sigkill_and_restart_under_running_containers(hosts):
    h1, h2 = hosts
    network_id = create_network(hosts, "rb-kill", 61, "10.61.0")
    remote = run(h2, "rb-kill-b", "rb-kill")
    run(h1, "rb-kill-a", "rb-kill")
    ping(h1, "rb-kill-a", remote)
    old_endpoint = network_field(h1, "rb-kill-a", "rb-kill", "EndpointID")
    vxlan = "vx_" + network_id[:12]

    h1.stop_plugin(signal.SIGKILL)
    ping(h1, "rb-kill-a", remote)  # the data path does not need the plugin
    reconciled = h1.plugin_log().count("reconciled:")
    h1.start_plugin(PLUGIN_ARGS)
    wait_for_reconcile(h1, reconciled)
    ping(h1, "rb-kill-a", remote)

    # A new container joins the same vxlan and reaches both old ones.
    new = run(h1, "rb-kill-c", "rb-kill")
    ping(h1, "rb-kill-c", remote)
    ping(h1, "rb-kill-c", network_field(h1, "rb-kill-a", "rb-kill"))
    assert vxlans(h1) == [vxlan]
    assert len(commands(h1, f"ip link add {vxlan} ", "ok")) == 1  # adopted, not made again

    # Removing the container from before the kill deletes its macvlan...
    h1.docker("rm", "-f", "rb-kill-a")  # the links go just after DeleteEndpoint's answer
    wait_for(lambda: commands(h1, f"ip link delete dev macvlan_{old_endpoint[:7]}", "ok"),
             10, "the old container's macvlan to be deleted")
    assert vxlans(h1) == [vxlan]
    ping(h2, "rb-kill-b", new)
    # ...and removing the last one deletes the vxlan.
    h1.docker("rm", "-f", "rb-kill-c")
    wait_for(lambda: commands(h1, f"ip link delete dev {vxlan}", "ok"), 10,
             f"{vxlan} to be deleted")
    assert plugin_links(h1) == []
    assert "Traceback" not in h1.plugin_log()


def test_links_of_a_container_removed_while_the_plugin_is_down_go_at_its_start(hosts):
    h1 = hosts[0]
    network_id = create_network([h1], "rb-gone", 66, "10.66.0")
    run(h1, "rb-gone-a", "rb-gone")
    h1.stop_plugin(signal.SIGKILL)
    h1.docker("rm", "-f", "rb-gone-a", timeout=180)  # Docker gives up on the plugin (~45 s)
    assert "vx_" + network_id[:12] in plugin_links(h1)  # nobody could delete it
    reconciled = h1.plugin_log().count("reconciled:")
    h1.start_plugin(PLUGIN_ARGS)
    wait_for_reconcile(h1, reconciled)
    assert plugin_links(h1) == []


def plugin_kept_running(host):
    return {}


def plugin_restarted_while_dockerd_is_down(host):
    """start_plugin returns once the socket answers: it serves without Docker."""
    def restart_plugin():
        host.stop_plugin(signal.SIGKILL)
        host.start_plugin(PLUGIN_ARGS)
    return {"while_stopped": restart_plugin}


def dockerd_log_from_now(host):
    """A function that returns what dockerd logged since this call."""
    with open(host.dockerd_log, "rb") as log:
        old = len(log.read())

    def new_log():
        with open(host.dockerd_log, "rb") as log:
            return log.read()[old:].decode(errors="replace")
    return new_log


def plugin_started_after_dockerd(host):
    """The plugin crashed (its socket file stays) and comes back only once
    the new dockerd has tried to reach it."""
    new_log = dockerd_log_from_now(host)

    def wait_then_start():
        wait_for(lambda: "Unable to connect to plugin" in new_log(), 30,
                 "dockerd to look for the plugin")
        host.start_plugin(PLUGIN_ARGS)
    return {"while_stopped": lambda: host.stop_plugin(signal.SIGKILL),
            "while_starting": wait_then_start}


@pytest.mark.parametrize("order", [plugin_kept_running, plugin_restarted_while_dockerd_is_down,
                                   plugin_started_after_dockerd])
def test_dockerd_restart_brings_back_restart_always_containers(hosts, order):
    h1 = hosts[0]
    network_id = create_network([h1], "rb-restart", 62, "10.62.0")
    for name in ("rb-restart-a", "rb-restart-b"):
        run(h1, name, "rb-restart", "--restart=always", "--stop-timeout", "1")
    reconciled = h1.plugin_log().count("reconciled:")

    h1.restart_dockerd(**order(h1))

    wait_for(lambda: len(running(h1)) == 2, 60, "both containers to run again")
    if order is not plugin_kept_running:
        wait_for_reconcile(h1, reconciled)  # caught up once Docker answered
    ping(h1, "rb-restart-a", network_field(h1, "rb-restart-b", "rb-restart"))
    ping(h1, "rb-restart-b", network_field(h1, "rb-restart-a", "rb-restart"))
    assert vxlans(h1) == ["vx_" + network_id[:12]]
    h1.docker("rm", "-f", "rb-restart-a", "rb-restart-b")
    # after DeleteEndpoint's answer: the macvlans, then the vxlan after the last
    wait_for(lambda: plugin_links(h1) == [], 10, "the links deleted")


def command_line(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode().split("\0")[:-1]


def test_a_socket_held_for_the_plugin_starts_it_for_a_restarting_dockerd(hosts):
    """As at boot with the .socket unit: the socket exists before dockerd
    starts and the plugin does not run. dockerd's first connection waits in
    the socket's queue and starts the plugin (systemd-socket-activate stands
    for systemd), so --restart=always containers come back without dockerd
    ever failing to reach the plugin."""
    h1 = hosts[0]
    network_id = create_network([h1], "rb-socket", 67, "10.67.0")
    for name in ("rb-socket-a", "rb-socket-b"):
        run(h1, name, "rb-socket", "--restart=always", "--stop-timeout", "1")

    def hold_the_socket():
        h1.stop_plugin()               # SIGTERM: the plugin removes the socket it bound
        h1.start_plugin(PLUGIN_ARGS, socket_activated=True)
        assert command_line(h1.plugin_pid)[0] == "systemd-socket-activate"  # no plugin yet
    new_log = dockerd_log_from_now(h1)
    h1.restart_dockerd(while_stopped=hold_the_socket)

    wait_for(lambda: len(running(h1)) == 2, 60, "both containers to run again")
    assert command_line(h1.plugin_pid)[1:3] == ["-m", "vxlan"]   # became the plugin
    assert "/run/docker/plugins/vxlan.sock (from systemd)" in h1.plugin_log()
    ping(h1, "rb-socket-a", network_field(h1, "rb-socket-b", "rb-socket"))
    ping(h1, "rb-socket-b", network_field(h1, "rb-socket-a", "rb-socket"))
    for failure in ("Unable to locate plugin", "Unable to connect to plugin"):
        assert failure not in new_log()
    assert vxlans(h1) == ["vx_" + network_id[:12]]
    h1.docker("rm", "-f", "rb-socket-a", "rb-socket-b")
    # after DeleteEndpoint's answer: the macvlans, then the vxlan after the last
    wait_for(lambda: plugin_links(h1) == [], 10, "the links deleted")


def test_a_plugin_back_too_late_leaves_restart_always_containers_stopped(hosts):
    """Docker tries a plugin that does not answer for about 15 s per container
    (retries after 1, 2, 4 and 8 s), one container after the other, then gives
    up: those containers stay stopped, and `docker start` brings them back
    once the plugin is up."""
    h1 = hosts[0]
    create_network([h1], "rb-late", 63, "10.63.0")
    for name in ("rb-late-a", "rb-late-b"):
        run(h1, name, "rb-late", "--restart=always", "--stop-timeout", "1")

    h1.restart_dockerd(while_stopped=lambda: h1.stop_plugin(signal.SIGKILL))

    assert running(h1) == []
    h1.start_plugin(PLUGIN_ARGS)
    h1.docker("start", "rb-late-a", "rb-late-b")
    ping(h1, "rb-late-a", network_field(h1, "rb-late-b", "rb-late"))


# --- races ----------------------------------------------------------------------

def test_fifty_containers_started_at_once_on_one_network(hosts):
    h1 = hosts[0]
    since = len(h1.audit_records())
    network_id = create_network([h1], "rb-fifty", 64, "10.64.0")
    names = [f"rb-fifty-{i}" for i in range(50)]
    in_parallel([lambda name=name: run(h1, name, "rb-fifty") for name in names])

    running = h1.docker("ps", "-q", "--filter", "network=rb-fifty",
                        "--filter", "status=running").stdout.split()
    assert len(running) == 50
    vxlan = "vx_" + network_id[:12]
    assert vxlans(h1) == [vxlan]
    assert len(commands(h1, f"ip link add {vxlan} ", "ok")) == 1
    ping(h1, names[0], network_field(h1, names[-1], "rb-fifty"))

    in_parallel([lambda name=name: h1.docker("rm", "-f", name, timeout=120) for name in names])
    # the macvlans go after DeleteEndpoint's answer, a few at a time; the vxlan
    # after the last of them (deleting it first would take the others along)
    wait_for(lambda: plugin_links(h1) == [], 60, "the fifty macvlans and the vxlan deleted")
    assert failures(h1, since) == []


def test_ten_networks_created_and_removed_at_once_with_containers(hosts):
    h1 = hosts[0]
    since = len(h1.audit_records())
    seen = []  # the host's vxlans, sampled while the networks come and go
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            seen.append([(link["ifname"], link["linkinfo"]["info_data"]["id"])
                         for link in h1.links()
                         if link.get("linkinfo", {}).get("info_kind") == "vxlan"])
            time.sleep(0.1)

    def life_of_a_network(i):
        name = f"rb-ten-{i}"
        network_id = create_network([h1], name, 70 + i, f"10.{70 + i}.0")
        in_parallel([lambda c=c: run(h1, f"{name}-{c}", name) for c in "ab"])
        h1.docker("rm", "-f", f"{name}-a", f"{name}-b", timeout=120)
        h1.docker("network", "rm", name)
        return network_id

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        network_ids = in_parallel([lambda i=i: life_of_a_network(i) for i in range(10)])
    finally:
        stop.set()
        sampler.join(10)

    assert max(len(sample) for sample in seen) >= 2, "the networks never overlapped"
    for sample in seen:
        vnis = [vni for _, vni in sample]
        assert len(vnis) == len(set(vnis)), f"two vxlans for one network: {sample}"
    for network_id in network_ids:
        vxlan = "vx_" + network_id[:12]
        assert len(commands(h1, f"ip link add {vxlan} ", "ok")) == 1
        assert len(commands(h1, f"ip link delete dev {vxlan}", "ok")) == 1
    assert failures(h1, since) == []
    assert plugin_links(h1) == []
    assert h1.docker("network", "ls", "-q", "--filter", "driver=vxlan").stdout.split() == []


# --- a failure halfway --------------------------------------------------------------

def test_failed_container_start_leaves_no_links(hosts):
    """The vxlan of the first container is created but cannot come up: a
    process holds its UDP port. Its creation is undone and nothing is left."""
    h1 = hosts[0]
    network_id = h1.docker("network", "create", "-d", "vxlan", "-o", "VxlanId=65",
                           "-o", "Port=4790", "--subnet", "10.65.0.0/24",
                           "rb-fail").stdout.strip()
    vxlan = "vx_" + network_id[:12]
    holder = subprocess.Popen(h1.nsenter_prefix() + [h1.lab.python, "-c", PORT_HOLDER, "4790"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "bound"
        started = h1.docker("run", "--rm", "--net", "rb-fail", IMAGE, "true", check=False)
        assert started.returncode != 0 and "Address already in use" in started.stderr
        assert plugin_links(h1) == []
        assert commands(h1, f"ip link delete dev {vxlan}", "ok")  # the undo
    finally:
        holder.kill()
        holder.wait()
    # The plugin did not keep a vxlan it no longer has: the next start works.
    h1.docker("run", "--rm", "--net", "rb-fail", IMAGE, "true")
    assert plugin_links(h1) == []


# Holds UDP port argv[1] in the host until killed (at most 5 minutes).
PORT_HOLDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("bound", flush=True)
time.sleep(300)
"""
