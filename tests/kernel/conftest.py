"""Kernel tests: the real plugin, run inside a throwaway network namespace,
driven over its socket; `ip -d -j link show` in that namespace is the truth.

The namespace has an `eth0` (one end of a veth pair whose other end lives in a
second throwaway namespace), so VXLAN and multicast traffic never leaves them.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import lab  # scripts/lab.py
from tests import rpc
from tests.rpc import endpoint_request, network_request, new_id
from tests.wait import wait_for
from vxlan.driver import AFTER_DELETE_ENDPOINT

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# every option, none at its default (vxall on eth0, 192.0.2.1)
EVERY_OPTION = {"VxlanId": "0x2a", "vxlanName": "vxall", "vxlanMTU": "1400",
                "vxlanHardwareAddr": "02:00:00:00:00:42", "vxlanTxQLen": "500",
                "SrcAddr": "192.0.2.1", "Group": "239.1.1.1", "TTL": "16", "TOS": "16",
                "Learning": "false", "Proxy": "true", "RSC": "yes", "L2miss": "on",
                "L3miss": "1", "GBP": "true", "Age": "600", "Limit": "100",
                "PortLow": "40000", "PortHigh": "50000", "Port": "4790"}


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True)


class Netns:
    def __init__(self):
        tag = secrets.token_hex(3)
        self.name, self.peer = f"dvk{tag}", f"dvk{tag}p"
        sh("ip", "netns", "add", self.name)
        sh("ip", "netns", "add", self.peer)
        sh("ip", "link", "add", "eth0", "netns", self.name, "type", "veth",
           "peer", "name", "eth0", "netns", self.peer)
        for ns, address in ((self.name, "192.0.2.1"), (self.peer, "192.0.2.2")):
            sh("ip", "-n", ns, "addr", "add", address + "/24", "dev", "eth0")
            sh("ip", "-n", ns, "addr", "add", address.replace("192.0.2.", "2001:db8::") + "/64",
               "dev", "eth0", "nodad")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def ip(self, *args, check=True):
        return sh("ip", "-n", self.name, *args, check=check)

    def link(self, name):
        """The link as `ip -d -j link show` reports it, or None."""
        done = self.ip("-d", "-j", "link", "show", "dev", name, check=False)
        return json.loads(done.stdout)[0] if done.returncode == 0 else None

    def flood_destinations(self, dev):
        """Where DEV sends broadcast and unknown traffic (its all-zero fdb entries)."""
        fdb = json.loads(sh("bridge", "-n", self.name, "-j", "fdb", "show", "dev", dev).stdout)
        return sorted(entry["dst"] for entry in fdb if entry["mac"] == "00:00:00:00:00:00")

    def link_names(self):
        return {link["ifname"] for link in json.loads(self.ip("-j", "link", "show").stdout)}

    def delete(self):
        sh("ip", "netns", "del", self.name, check=False)
        sh("ip", "netns", "del", self.peer, check=False)


class Plugin:
    """The plugin as a process in the namespace, with its socket, state and audit log.
    It has no Docker: DOCKER_HOST names a socket nobody listens on, so Docker
    never answers (tests/e2e has the real engine)."""

    def __init__(self, netns, workdir, flags=(), env=None, launcher=()):
        self.netns = netns
        self.workdir = workdir
        self.socket = os.path.join(workdir, "vxlan.sock")
        self.state_dir = os.path.join(workdir, "state")
        self.audit_log = os.path.join(workdir, "audit.jsonl")
        self.stderr_path = os.path.join(workdir, "plugin.log")
        self.flags = list(flags)
        self.env = env
        self.launcher = list(launcher)  # a command that runs the plugin's command line
        self.process = None

    def start(self):
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the plugin is running: stop it first (a second one would "
                               "be left behind)")
        env = dict(self.env or os.environ,
                   DOCKER_HOST="unix://" + os.path.join(self.workdir, "no-docker.sock"))
        with open(self.stderr_path, "a") as stderr:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.netns.name, *self.launcher,
                 sys.executable, "-m", "vxlan",
                 "--socket", self.socket, "--state-dir", self.state_dir,
                 "--audit-log", self.audit_log, *self.flags],
                cwd=REPO, stdout=stderr, stderr=stderr, env=env)
        deadline = time.monotonic() + 20
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"plugin did not start:\n{self.log()}")
            time.sleep(0.05)
        return self

    def _answers(self):
        try:
            return self.call("Plugin.Activate")[0] == 200
        except OSError:
            return False

    def stop(self, sig=signal.SIGTERM):
        """Stops our process by its PID; SIGKILL if it does not go within 15 s."""
        return lab.stop_popen(self.process, sig, 15) if self.process else None

    def call(self, method, body=None):
        return rpc.call(self.socket, "NetworkDriver." + method if "." not in method else method,
                        body)

    def ok(self, method, body=None):
        status, answer = self.call(method, body)
        assert status == 200 and "Err" not in (answer or {}), (method, status, answer)
        return answer

    def delete_endpoint(self, network_id, endpoint_id):
        """DeleteEndpoint, and the wait for what it deletes after its answer: its
        links, whose deletion is logged as done (or failed) when it is."""
        since = len(self.audit())
        self.ok("DeleteEndpoint", {"NetworkID": network_id, "EndpointID": endpoint_id})
        self.wait_for_deletion(endpoint_id, since)

    def wait_for_deletion(self, endpoint_id, since):
        """Waits for the deletion that follows an answered DeleteEndpoint, logged
        after the audit's first SINCE records."""
        def settled():
            records = [r for r in self.audit()[since:] if r.get("endpoint") == endpoint_id
                       and r.get("cause") == AFTER_DELETE_ENDPOINT]
            runs = sum(r["event"] == "run" for r in records)
            return runs and runs == len(records) - runs
        wait_for(settled, 30, f"the links of endpoint {endpoint_id[:12]} to be deleted")

    def log(self):
        with open(self.stderr_path) as f:
            return f.read()

    def audit(self):
        if not os.path.exists(self.audit_log):
            return []
        with open(self.audit_log) as f:
            return [json.loads(line) for line in f]


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("kernel tests need root")
    ns = Netns()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="dvk-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def plugin(netns, workdir):
    started = Plugin(netns, workdir, ["--vtepdev", "eth0"]).start()
    try:
        yield started
    finally:
        started.stop()


def join(plugin, network_id, endpoint_id):
    return plugin.ok("Join", {"NetworkID": network_id, "EndpointID": endpoint_id,
                              "SandboxKey": "/var/run/docker/netns/x", "Options": {}})


def create_and_join(plugin, options, address="10.42.0.2/24", mac=""):
    network_id, endpoint_id = new_id(), new_id()
    plugin.ok("CreateNetwork", network_request(network_id, options))
    answer = plugin.ok("CreateEndpoint", endpoint_request(network_id, endpoint_id, address, mac))
    return network_id, endpoint_id, answer, join(plugin, network_id, endpoint_id)


SLOW_IP = """#!{python}
# ip, held back while the flag file exists, for at most SECONDS (to hold a request
# inside a command). `ip -batch -` is started ahead of need, so it is held once
# its input arrives.
import os, select, sys, time
if sys.argv[1:3] == ["-batch", "-"]:
    select.select([0], [], [])
deadline = time.monotonic() + {seconds}
while os.path.exists({flag!r}) and time.monotonic() < deadline:
    time.sleep(0.05)
os.execv({real_ip!r}, ["ip"] + sys.argv[1:])
"""


def slow_ip_env(workdir, seconds):
    """PATH with an `ip` that waits while WORKDIR/slow exists (at most SECONDS)."""
    bindir = os.path.join(workdir, "bin")
    os.makedirs(bindir)
    real_ip = next(p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip")
                   if os.path.exists(p))
    path = os.path.join(bindir, "ip")
    with open(path, "w") as f:
        f.write(SLOW_IP.format(python=sys.executable, flag=os.path.join(workdir, "slow"),
                               seconds=seconds, real_ip=real_ip))
    os.chmod(path, 0o755)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]}


@pytest.fixture
def slow_plugin(netns, workdir):
    """start(seconds, *flags): the plugin, whose `ip` waits up to SECONDS while
    WORKDIR/slow exists (start_join makes it); stopped after the test."""
    started = []

    def start(seconds, *flags):
        plugin = Plugin(netns, workdir, ["--vtepdev", "eth0", *flags],
                        env=slow_ip_env(workdir, seconds)).start()
        started.append(plugin)
        return plugin
    yield start
    for plugin in started:
        plugin.stop()


def start_join(plugin, results):
    """Starts a Join in a thread, with the slow plugin's `ip` slow from then on."""
    network_id, endpoint_id = new_id(), new_id()
    plugin.ok("CreateNetwork", network_request(network_id, {"VxlanId": "20"}))
    plugin.ok("CreateEndpoint", endpoint_request(network_id, endpoint_id))
    open(os.path.join(plugin.workdir, "slow"), "w").close()

    def call():
        started = time.monotonic()
        results["join"] = plugin.call("Join", {"NetworkID": network_id,
                                               "EndpointID": endpoint_id})
        results["join_seconds"] = time.monotonic() - started
    thread = threading.Thread(target=call)
    thread.start()
    return thread, network_id


def waiting_batch_processes(pid):
    """PIDs of the plugin's `ip -batch -` processes (its helper's children)."""
    return [child for child in descendants(pid)
            if (argv := cmdline(child)) and os.path.basename(argv[0]) == "ip"
            and argv[1:] == ["-batch", "-"]]


def descendants(pid):
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:  # a process that ended meanwhile
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children = [int(child) for child in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            continue
        for child in children:
            found += [child] + descendants(child)
    return found


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode() for part in f.read().split(b"\0") if part]
    except (FileNotFoundError, ProcessLookupError):  # it ended between open and read
        return None


def one_waiting(plugin):
    """The PID of the plugin's `ip -batch -` waiting for the next request (it is
    started once a request has been answered)."""
    wait_for(lambda: len(waiting_batch_processes(plugin.process.pid)) == 1)
    return waiting_batch_processes(plugin.process.pid)[0]
