#!/usr/bin/env python3
"""Benchmarks of the vxlan plugin, side by side with Docker's built-in macvlan
driver on a hand-made vxlan parent (the reference), in a lab of two Docker
hosts (scripts/lab.py).  Run it through scripts/bench.sh, which installs what
it needs first.

    scripts/bench.sh [--out FILE] [--only start,parallel,dataplane,rpc,scale,image,status]
                     [--runs N] [--profile DIR] [--status-containers N]

What it measures (and the bar each figure is held to):
  start      `docker run --rm busybox-local true`, plugin vs reference, in
             interleaved pairs: median of the pairs' ratios <= 1.05 (on an empty
             network and on a network that keeps a container running)
  parallel   50 `docker run -d` at once on one network, 5 rounds interleaved:
             all succeed, ratio of the median wall times <= 1.10
  dataplane  between containers on the two hosts, 16 rounds interleaved: iperf3
             for 3 s (median of the rounds' throughput ratios >= 0.97) and 16
             pings (median RTT ratio <= 1.05)
  rpc        the plugin's RPCs straight on its socket over one keep-alive
             connection, as Docker sends them: a pause before each (Docker's own
             gaps are longer), and again back to back; p50/p99, the time spent in
             `ip` (from the audit log), and the same `ip -batch -` fed directly.
             Bars: Join p50 <= 3 ms; Leave (no command, no write) p50 <= 1 ms and
             within 0.3 ms of a plain keep-alive client's no-op RPC at the same
             pace; CreateEndpoint p50 <= one durable state write (measured on the
             same disk) + 1 ms.
             With --profile DIR, py-spy also samples the plugin through extra RPC
             cycles
  scale      100 networks x 10 endpoints over RPC, on a freshly started plugin:
             Join p50 at 1000 endpoints <= 1.5x the p50 at 10; CreateNetwork p50
             of the last 10 networks (1100 links) <= 2x the first 10; plugin VmRSS
             <= 50 MiB from 10 to 1000 endpoints; all links removed
  image      the image (scripts/build-image.sh) as a managed plugin on one
             host: its size as `docker image ls` says it (<= 60 MB), the time
             from `docker plugin enable` to the first answer on the plugin's
             socket (10 rounds), and the plugin's VmRSS in its container, idle
             and with a container on one of its networks
  status     `docker-vxlan-plugin status` on a host with 1000 running containers
             (10 networks x 100, real `docker run`): its wall time, with and
             without Docker to ask (bar: <= 30 s with), naming every container

The plugin's network and the reference use the same vxlan options, but not the
same VNI: one host cannot hold two vxlans with one VNI and port.  Everything
runs inside the lab's namespaces, and the lab (namespaces, dockerd, containers,
links, plugin) is torn down at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import ctypes
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import lab as lablib

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests import rpc  # noqa: E402  (the socket client the kernel tests use)
from vxlan.commands import kind_of  # noqa: E402

SECTIONS = ("start", "parallel", "dataplane", "rpc", "scale", "image", "status")
IMAGE = lablib.IMAGE
PLUGIN = "vxlan"
REFERENCE = "macvlan"
PLUGIN_ARGS = ["--vtepdev", "eth0"]
PLUGIN_NET = "bench-vxlan"
REFERENCE_NET = "bench-macvlan"
REFERENCE_PARENT = "vxref"
# Same options for both drivers but the VNI (and so the group and subnet).
PLUGIN_VNI, PLUGIN_GROUP, PLUGIN_SUBNET = 4101, "239.1.1.101", "10.101.0"
REFERENCE_VNI, REFERENCE_GROUP, REFERENCE_SUBNET = 4102, "239.1.1.102", "10.102.0"
# RPC-level networks share one group: a host joins at most 20 multicast groups
# (net.ipv4.igmp_max_memberships), and each distinct Group of a vxlan is one.
RPC_GROUP = "239.1.1.200"
CLONE_NEWNET = 0x40000000
BENCH_IMAGE = "docker-vxlan-plugin:bench"
MANAGED = "bench-managed:latest"
MANAGED_NET, MANAGED_VNI, MANAGED_SUBNET = "bench-managed", 4103, "10.103.0"
ENABLE_ROUNDS = 10

BARS = {
    "start_ratio": ("<=", 1.05),
    "parallel_ratio": ("<=", 1.10),
    "join_p50_ms": ("<=", 3.0),
    "leave_p50_ms": ("<=", 1.0),
    "leave_vs_plain_client_ms": ("<=", 0.3),
    "create_endpoint_over_write_ms": ("<=", 1.0),
    "scale_join_ratio": ("<=", 1.5),
    "scale_create_network_ratio": ("<=", 2.0),
    "scale_rss_mib": ("<=", 50.0),
    "status_s": ("<=", 30.0),
    "throughput_ratio": (">=", 0.97),
    "rtt_ratio": ("<=", 1.05),
    "image_mb": ("<=", 60.0),
}
# Before each RPC of a paced cycle. Docker never sends a container's RPCs back to
# back: the sandbox is set up between CreateEndpoint and Join, the container runs
# between Join and Leave. The plugin uses such gaps to start its next `ip -batch -`.
RPC_PACE_S = 0.03


DRIVERS = ((PLUGIN, PLUGIN_NET), (REFERENCE, REFERENCE_NET))


def interleaved(round_index):
    """(driver, network) pairs, the order turned round every other round."""
    return DRIVERS if round_index % 2 == 0 else DRIVERS[::-1]


class BenchError(RuntimeError):
    """A benchmark could not run as intended (the message says why)."""


# --- statistics -------------------------------------------------------------------

def percentile(samples, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def describe(samples, digits=2):
    if not samples:
        return {"n": 0}
    return {"n": len(samples), "p50": round(statistics.median(samples), digits),
            "p25": round(percentile(samples, 25), digits),
            "p75": round(percentile(samples, 75), digits),
            "p99": round(percentile(samples, 99), digits),
            "min": round(min(samples), digits), "max": round(max(samples), digits)}


def meets(bar, value):
    op, limit = BARS[bar]
    return value <= limit if op == "<=" else value >= limit


def bar(name):
    """A bar as the table shows it, e.g. "<= 1.1"."""
    op, limit = BARS[name]
    return f"{op} {limit:g}"


def ratio(a, b):
    return round(a / b, 3) if b else None


# --- helpers on a lab host -----------------------------------------------------------

def timed(fn, *args, **kwargs):
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def plugin_socket(host):
    """The plugin's socket as seen from the root mount namespace."""
    return f"/proc/{host.dockerd_pid}/root/run/docker/plugins/{PLUGIN}.sock"


def vm_status(pid, keys=("VmRSS", "VmHWM")):
    """Memory figures of a process from /proc/PID/status (VmRSS, RssAnon...), in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def cpu_ms(pid):
    """CPU milliseconds the plugin used itself ("plugin"), and its helper
    (vxlan/spawner.py) with the ip processes it started and reaped ("helper
    and ip"), from /proc/PID/stat."""
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")

    def fields(process):
        data = Path(f"/proc/{process}/stat").read_text()
        return [int(field) for field in data[data.rindex(")") + 2:].split()[11:15]]

    own = fields(pid)
    helpers = [fields(child) for child in children_of(pid)]
    return {"plugin": (own[0] + own[1]) * tick_ms,
            "helper and ip": (own[2] + own[3] + sum(sum(f) for f in helpers)) * tick_ms}


def children_of(pid):
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return found


RSS_PARTS = ("VmRSS", "RssAnon", "RssFile")


def managed_plugin_pid(plugin_id):
    """The main process of a managed plugin: the child of the containerd shim
    that runs the container named by the plugin's ID."""
    def ppid_and_cmdline(pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None, []
        return int(re.search(r"^PPid:\s+(\d+)", status, re.M).group(1)), cmdline

    pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    shims = {pid for pid in pids if plugin_id.encode() in ppid_and_cmdline(pid)[1]
             and b"shim" in ppid_and_cmdline(pid)[1][0]}
    children = [pid for pid in pids if ppid_and_cmdline(pid)[0] in shims]
    if len(children) != 1:
        raise BenchError(f"managed plugin {plugin_id[:12]}: expected one process, "
                         f"found {children}")
    return children[0]


def answers(socket_path):
    try:
        return rpc.call(socket_path, "NetworkDriver.GetCapabilities", timeout=1)[0] == 200
    except OSError:
        return False


def container_pid(host, name):
    return int(host.docker("inspect", "-f", "{{.State.Pid}}", name).stdout)


def container_ip(host, name):
    return host.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}"
                       "{{end}}", name).stdout.strip()


def remove_containers(host, network):
    """Removes every container on network; returns the seconds it took."""
    ids = host.docker("ps", "-aq", "--filter", f"network={network}").stdout.split()
    if not ids:
        return 0.0
    seconds, _ = timed(host.docker, "rm", "-f", *ids, timeout=300)
    return seconds


class Children:
    """Processes the benchmark starts itself (iperf3 servers, py-spy): each is
    stopped by its PID when the benchmark ends, however it ends."""

    def __init__(self):
        self.popens = []

    def start(self, argv, **kwargs):
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kwargs)
        self.popens.append(popen)
        return popen

    def stop(self, popen, sig=signal.SIGTERM, timeout=5.0):
        lablib.stop_popen(popen, sig, timeout)
        if popen in self.popens:
            self.popens.remove(popen)

    def stop_all(self):
        for popen in list(self.popens):
            self.stop(popen)


def in_netns(netns_path):
    """A preexec_fn that moves the child into a network namespace, so that a
    directly timed `ip` costs what the plugin's own `ip` costs (no `ip -n`,
    which also remounts /sys, and no nsenter in between)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def enter():
        fd = os.open(netns_path, os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            os._exit(126)
        os.close(fd)
    return enter


# --- the plugin's socket ---------------------------------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection to the plugin's socket, as lean as a
    client can be (Docker's Go client is not slower): the request is written
    in one piece, the answer read up to its Content-Length."""

    def __init__(self, socket_path, timeout=60):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(socket_path)

    def post(self, method, body):
        """(status, answer body) of POST /METHOD with BODY (bytes)."""
        self.sock.sendall(b"POST /%s HTTP/1.1\r\nHost: plugin\r\nContent-Length: %d\r\n\r\n%s"
                          % (method.encode(), len(body), body))
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += self._recv()
        head, _, rest = answer.partition(b"\r\n\r\n")
        length = int(re.search(rb"\r\nContent-Length: *(\d+)", head, re.I).group(1))
        while len(rest) < length:
            rest += self._recv()
        return int(head.split(b" ", 2)[1]), rest

    def _recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise BenchError("the plugin closed the connection")
        return data

    def close(self):
        self.sock.close()


class PluginClient:
    """Remote-driver RPCs on one host's plugin, each timed in milliseconds, over
    one keep-alive connection per thread, as Docker's plugin client keeps one."""

    def __init__(self, host):
        self.host = host
        self.socket = plugin_socket(host)
        self._local = threading.local()

    def call(self, method, body):
        data = json.dumps(body).encode()
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = Connection(self.socket)
        started = time.perf_counter()
        try:
            status, raw = connection.post("NetworkDriver." + method, data)
        except (OSError, BenchError):
            self._local.connection = None
            connection.close()
            raise
        elapsed = (time.perf_counter() - started) * 1000
        answer = json.loads(raw or b"null")
        if status != 200 or "Err" in (answer or {}):
            raise BenchError(f"{method} failed ({status}): {answer}")
        return elapsed, answer

    def create_network(self, network_id, vni, subnet, group=RPC_GROUP):
        return self.call("CreateNetwork", rpc.network_request(
            network_id, {"VxlanId": str(vni), "Group": group}, f"{subnet}.0/24",
            f"{subnet}.254/24"))[0]

    def create_endpoint(self, network_id, endpoint_id, address):
        return self.call("CreateEndpoint",
                         rpc.endpoint_request(network_id, endpoint_id, address))[0]

    def join(self, network_id, endpoint_id):
        return self.call("Join", {
            "NetworkID": network_id, "EndpointID": endpoint_id,
            "SandboxKey": f"/var/run/docker/netns/{endpoint_id[:12]}", "Options": {}})[0]

    def leave(self, network_id, endpoint_id):
        return self.call("Leave", {"NetworkID": network_id, "EndpointID": endpoint_id})[0]

    def delete_endpoint(self, network_id, endpoint_id):
        return self.call("DeleteEndpoint", {"NetworkID": network_id,
                                            "EndpointID": endpoint_id})[0]

    def delete_network(self, network_id):
        return self.call("DeleteNetwork", {"NetworkID": network_id})[0]

    def cycle(self, network_id, address, pace=0.0):
        """A container coming and going, PACE seconds before each RPC: (its
        endpoint ID, {RPC: ms})."""
        endpoint = rpc.new_id()
        steps = (("CreateEndpoint", lambda: self.create_endpoint(network_id, endpoint, address)),
                 ("Join", lambda: self.join(network_id, endpoint)),
                 ("Leave", lambda: self.leave(network_id, endpoint)),
                 ("DeleteEndpoint", lambda: self.delete_endpoint(network_id, endpoint)))
        timings = {}
        for name, step in steps:
            time.sleep(pace)
            timings[name] = step()
        return endpoint, timings

    def vxlan_of(self, network_id, endpoint_id):
        return self.call("EndpointOperInfo", {"NetworkID": network_id,
                                              "EndpointID": endpoint_id})[1]["Value"]["vxlan"]


def plain_noop_ms(socket_path, count, pace=0.0):
    """A no-op RPC (Leave) sent COUNT times on one connection, PACE seconds apart,
    and nothing else: what the socket, HTTP and the plugin's request handling
    cost, the floor under every RPC's figure."""
    body = json.dumps({"NetworkID": "0" * 64, "EndpointID": "0" * 64}).encode()
    connection = Connection(socket_path)
    samples = []
    try:
        for _ in range(count):
            time.sleep(pace)
            started = time.perf_counter()
            status, _ = connection.post("NetworkDriver.Leave", body)
            samples.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise BenchError(f"the no-op RPC failed with HTTP status {status}")
    finally:
        connection.close()
    return samples


def durable_write_ms(folder, count, pace=0.0):
    """One state record written as the plugin writes it (write, fsync, rename,
    fsync the folder), COUNT times in FOLDER, PACE seconds apart: the disk's
    share of CreateEndpoint."""
    scratch = Path(folder) / ".bench-writes"
    scratch.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"id": "0" * 64, "network": "0" * 64, "mac": "02:42:0a:00:00:01"})
    samples = []
    try:
        for i in range(count):
            time.sleep(pace)
            started = time.perf_counter()
            temporary = scratch / ".tmp-write"
            with open(temporary, "w") as f:
                f.write(record)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, scratch / f"{i}.json")
            fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(fd)
            os.close(fd)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        for path in scratch.iterdir():
            path.unlink()
        scratch.rmdir()
    return samples


def ip_time_by_request(audit_records):
    """(rpc, endpoint or network ID) -> milliseconds the plugin waited for ip/bridge
    processes.  Each line of a batch carries the whole batch's duration, so a
    batch counts once (at its first line)."""
    spent = collections.defaultdict(float)
    for record in audit_records:
        if record.get("event") != "result" or record.get("status") == "not run":
            continue
        if record.get("batch", {}).get("index", 1) != 1:
            continue
        key = (record.get("rpc"), record.get("endpoint") or record.get("network"))
        spent[key] += record.get("duration_ms", 0.0)
    return spent


# --- the benchmark ------------------------------------------------------------------------

class Bench:
    def __init__(self, lab, args, children):
        self.lab = lab
        self.args = args
        self.children = children
        self.h1, self.h2 = lab.hosts
        self.results = {}

    # -- set-up --------------------------------------------------------------------

    def set_up_networks(self):
        """On each host: the plugin's network and the reference (Docker's macvlan on
        a hand-made vxlan with the same options), each host with its own ip-range."""
        for i, host in enumerate(self.lab.hosts):
            host.run_in_ns(f"ip link add {REFERENCE_PARENT} type vxlan id {REFERENCE_VNI} "
                           f"dev eth0 group {REFERENCE_GROUP} dstport 4789 && "
                           f"ip link set {REFERENCE_PARENT} up")
            host.docker("network", "create", "-d", REFERENCE, "-o",
                        f"parent={REFERENCE_PARENT}", "--subnet", f"{REFERENCE_SUBNET}.0/24",
                        "--ip-range", f"{REFERENCE_SUBNET}.{128 * i}/25",
                        "--gateway", f"{REFERENCE_SUBNET}.254", REFERENCE_NET)
            host.docker("network", "create", "-d", PLUGIN, "-o", f"VxlanId={PLUGIN_VNI}",
                        "-o", f"Group={PLUGIN_GROUP}", "--subnet", f"{PLUGIN_SUBNET}.0/24",
                        "--ip-range", f"{PLUGIN_SUBNET}.{128 * i}/25",
                        "--gateway", f"{PLUGIN_SUBNET}.254", PLUGIN_NET)

    # -- 1. container start ------------------------------------------------------------

    def bench_start(self):
        host, runs = self.h1, self.args.runs

        def start(network):
            seconds, done = timed(host.docker, "run", "--rm", "--net", network, IMAGE, "true",
                                  check=False)
            if done.returncode != 0:
                raise BenchError(f"docker run on {network} failed: {done.stderr.strip()}")
            return seconds

        figures = {}
        for variant in ("empty", "busy"):
            residents = []
            # "empty": no container runs on the network; the plugin's vxlan lingers
            # after each run (--vxlan-linger), as it does between a user's runs
            if variant == "busy":
                for network in (PLUGIN_NET, REFERENCE_NET):
                    name = f"bench-resident-{network}"
                    host.docker("run", "-d", "--name", name, "--net", network, IMAGE,
                                "sleep", "3600")
                    residents.append(name)
            for network in (PLUGIN_NET, REFERENCE_NET):  # warm-up, not counted
                start(network)
            samples = {PLUGIN: [], REFERENCE: []}
            for i in range(runs):
                for driver, network in interleaved(i):
                    samples[driver].append(start(network))
            if residents:
                host.docker("rm", "-f", *residents)
            plugin_p50 = statistics.median(samples[PLUGIN])
            reference_p50 = statistics.median(samples[REFERENCE])
            pair_ratios = [a / b for a, b in zip(samples[PLUGIN], samples[REFERENCE])]
            figures[variant] = {
                "plugin_s": describe(samples[PLUGIN], 3),
                "reference_s": describe(samples[REFERENCE], 3),
                "ratio_of_medians": ratio(plugin_p50, reference_p50),
                # the figure held to the bar: each pair ran back to back
                "median_of_pair_ratios": round(statistics.median(pair_ratios), 3),
                "pair_ratio_quartiles": [round(q, 3) for q in
                                         statistics.quantiles(pair_ratios, n=4)],
                "samples": {k: [round(s, 4) for s in v] for k, v in samples.items()},
            }
            figures[variant]["met"] = meets("start_ratio",
                                            figures[variant]["median_of_pair_ratios"])
        self.results["start"] = {"variants": figures,
                                 "met": all(f["met"] for f in figures.values())}

    # -- 2. parallel start ------------------------------------------------------------------

    def bench_parallel(self):
        host, count, rounds = self.h1, self.args.parallel, 5

        def start_many(network):
            def one(_):
                return host.docker("run", "-d", "--net", network, IMAGE, "sleep", "3600",
                                   check=False, timeout=600)
            with concurrent.futures.ThreadPoolExecutor(count) as pool:
                seconds, done = timed(lambda: list(pool.map(one, range(count))))
            failures = [d.stderr.strip() for d in done if d.returncode != 0]
            return seconds, failures

        runs = {PLUGIN: [], REFERENCE: []}
        for i in range(rounds):
            for driver, network in interleaved(i):
                seconds, failures = start_many(network)
                removal = remove_containers(host, network)
                runs[driver].append({"wall_s": round(seconds, 2), "ok": count - len(failures),
                                     "errors": failures[:3], "remove_all_s": round(removal, 2)})
        walls = {d: statistics.median(r["wall_s"] for r in rs) for d, rs in runs.items()}
        all_ok = all(r["ok"] == count for rs in runs.values() for r in rs)
        value = ratio(walls[PLUGIN], walls[REFERENCE])
        self.results["parallel"] = {
            "containers": count, "rounds": runs, "plugin_wall_s": round(walls[PLUGIN], 2),
            "reference_wall_s": round(walls[REFERENCE], 2), "ratio": value,
            "all_succeeded": all_ok, "met": all_ok and meets("parallel_ratio", value)}

    # -- 5. data plane --------------------------------------------------------------------------

    def bench_dataplane(self):
        # Single iperf3 runs on this kind of machine scatter by +-15 % between two
        # runs of one driver, so the figure is the median over many back-to-back
        # pairs of the ratio within each pair.
        reps, seconds, pings = 16, 3, 16
        pairs = {}
        for driver, network in DRIVERS:
            names = [f"bench-dp-{driver}-{h.name}" for h in self.lab.hosts]
            for host, name in zip(self.lab.hosts, names):
                host.docker("run", "-d", "--name", name, "--net", network, IMAGE,
                            "sleep", "3600")
            client_pid = container_pid(self.h1, names[0])
            mtu = int(subprocess.run(["nsenter", "-t", str(client_pid), "-n", "cat",
                                      "/sys/class/net/eth0/mtu"], capture_output=True,
                                     text=True, check=True).stdout)
            pairs[driver] = {"client_pid": client_pid,
                             "server_pid": container_pid(self.h2, names[1]),
                             "server_ip": container_ip(self.h2, names[1]), "mtu": mtu}
        try:
            samples = {d: {"gbit_s": [], "rtt_ms": []} for d in pairs}
            for i in range(reps):
                drivers = [driver for driver, _ in interleaved(i)]
                for driver in drivers:
                    samples[driver]["gbit_s"].append(self._iperf(pairs[driver], seconds))
                for driver in drivers:
                    samples[driver]["rtt_ms"] += self._ping(pairs[driver], pings)
        finally:
            for driver, network in DRIVERS:
                for host in self.lab.hosts:
                    remove_containers(host, network)
        throughput = {d: statistics.median(s["gbit_s"]) for d, s in samples.items()}
        rtt = {d: statistics.median(s["rtt_ms"]) for d, s in samples.items()}
        pair_ratios = [ratio(a, b) for a, b in zip(samples[PLUGIN]["gbit_s"],
                                                    samples[REFERENCE]["gbit_s"])]
        figures = {
            "iperf3_seconds": seconds, "repetitions": reps, "pings_per_repetition": pings,
            "mtu": {d: p["mtu"] for d, p in pairs.items()},
            "plugin_gbit_s": round(throughput[PLUGIN], 2),
            "reference_gbit_s": round(throughput[REFERENCE], 2),
            "throughput_ratio_of_medians": ratio(throughput[PLUGIN], throughput[REFERENCE]),
            # each round's plugin/reference pair ran back to back
            "throughput_pair_ratios": pair_ratios,
            "throughput_ratio": round(statistics.median(pair_ratios), 3),
            "throughput_pair_ratio_quartiles": [round(q, 3) for q in
                                                statistics.quantiles(pair_ratios, n=4)],
            "plugin_rtt_ms": describe(samples[PLUGIN]["rtt_ms"], 3),
            "reference_rtt_ms": describe(samples[REFERENCE]["rtt_ms"], 3),
            "rtt_ratio": ratio(rtt[PLUGIN], rtt[REFERENCE]),
            "samples": samples,
        }
        figures["met"] = (meets("throughput_ratio", figures["throughput_ratio"])
                          and meets("rtt_ratio", figures["rtt_ratio"]))
        self.results["dataplane"] = figures

    def _iperf(self, pair, seconds):
        """Gbit/s of one iperf3 run from the client container to the server container;
        both iperf3 run on the host, inside the containers' network namespaces."""
        server = self.children.start(
            ["nsenter", "-t", str(pair["server_pid"]), "-n", "iperf3", "-s", "-1",
             "-p", "5201"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while ":5201 " not in subprocess.run(
                    ["nsenter", "-t", str(pair["server_pid"]), "-n", "ss", "-ltnH"],
                    capture_output=True, text=True).stdout:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("the iperf3 server did not start")
                time.sleep(0.05)
            done = subprocess.run(
                ["nsenter", "-t", str(pair["client_pid"]), "-n", "iperf3", "-c",
                 pair["server_ip"], "-p", "5201", "-t", str(seconds), "-J"],
                capture_output=True, text=True, timeout=seconds + 30)
            report = json.loads(done.stdout or "{}")
            if done.returncode != 0 or "end" not in report:
                raise BenchError(f"iperf3 failed: {report.get('error') or done.stderr}")
            return round(report["end"]["sum_received"]["bits_per_second"] / 1e9, 3)
        finally:
            self.children.stop(server)

    def _ping(self, pair, count):
        done = subprocess.run(
            ["nsenter", "-t", str(pair["client_pid"]), "-n", "busybox", "ping", "-c",
             str(count), "-i", "0.1", "-W", "2", pair["server_ip"]],
            capture_output=True, text=True, timeout=count * 0.1 + 30)
        times = [float(t) for t in re.findall(r"time=([\d.]+) ms", done.stdout)]
        if len(times) < count * 0.9:
            raise BenchError(f"ping lost packets: {done.stdout[-300:]}")
        return times

    # -- 3. RPC latency -------------------------------------------------------------------------

    def bench_rpc(self):
        client, host = PluginClient(self.h1), self.h1
        first_cycles, steady_cycles = 30, 100
        timings = collections.defaultdict(list)   # rpc -> [(ms, key)]
        back_to_back = collections.defaultdict(list)  # rpc -> [ms]

        # The first Join of a network makes its vxlan, and DeleteNetwork deletes it
        # (it outlives the last DeleteEndpoint): one network after the other, each
        # with one endpoint.
        for i in range(first_cycles):
            network, endpoint = rpc.new_id(), rpc.new_id()
            timings["CreateNetwork"].append((client.create_network(network, 4200 + i,
                                                                    "10.200.0"), None))
            time.sleep(RPC_PACE_S)
            client.create_endpoint(network, endpoint, f"10.200.0.{i + 1}/24")
            time.sleep(RPC_PACE_S)
            timings["Join (first: makes the vxlan)"].append(
                (client.join(network, endpoint), ("Join", endpoint)))
            time.sleep(RPC_PACE_S)
            client.leave(network, endpoint)
            client.delete_endpoint(network, endpoint)
            time.sleep(RPC_PACE_S)
            timings["DeleteNetwork (deletes the vxlan)"].append(
                (client.delete_network(network), ("DeleteNetwork", network)))

        # Further containers on a network that keeps one endpoint (its vxlan stays).
        network, resident = rpc.new_id(), rpc.new_id()
        client.create_network(network, 4300, "10.201.0")
        client.create_endpoint(network, resident, "10.201.0.250/24")
        client.join(network, resident)
        vxlan = client.vxlan_of(network, resident)
        cpu_before = cpu_ms(host.plugin_pid)
        for i in range(steady_cycles):
            endpoint, ms = client.cycle(network, f"10.201.0.{i + 1}/24", RPC_PACE_S)
            for name, value in ms.items():
                in_ip = (name, endpoint) if name in ("Join", "DeleteEndpoint") else None
                timings[name].append((value, in_ip))
        cpu_after = cpu_ms(host.plugin_pid)
        for i in range(steady_cycles):
            for name, value in client.cycle(network, f"10.201.1.{i + 1}/24")[1].items():
                back_to_back[name].append(value)
        time.sleep(0.5)
        plain = plain_noop_ms(client.socket, steady_cycles, RPC_PACE_S)
        plain_in_a_row = plain_noop_ms(client.socket, 200)
        writes = durable_write_ms(host.plugin_state_dir, steady_cycles, RPC_PACE_S)

        direct = self._direct_ip(host, vxlan, 30)
        profile = self._profile_rpc(client, network) if self.args.profile else None
        client.delete_endpoint(network, resident)
        client.delete_network(network)

        spent = ip_time_by_request(host.audit_records())
        rows = {}
        for name, samples in timings.items():
            ms = [m for m, _ in samples]
            row = {"ms": describe(ms)}
            keys = [k for _, k in samples if k]
            if keys:
                ip_ms = [spent.get(k, 0.0) for k in keys]
                row["ip_ms"] = describe(ip_ms)
                row["ip_share_of_p50"] = round(statistics.median(ip_ms) / statistics.median(ms), 2)
            if name in back_to_back:
                row["back_to_back_ms"] = describe(back_to_back[name])
            rows[name] = row
        rows["Join"]["direct_ip_ms"] = direct["join"]
        rows["Join (first: makes the vxlan)"]["direct_ip_ms"] = direct["first_join"]
        rows["DeleteEndpoint"]["direct_ip_ms"] = direct["delete"]
        rows["DeleteNetwork (deletes the vxlan)"]["direct_ip_ms"] = direct["delete_vxlan"]
        figures = {
            "join_p50_ms": rows["Join"]["ms"]["p50"],
            "leave_p50_ms": rows["Leave"]["ms"]["p50"],
            "plain_noop_ms": describe(plain, 3),
            "plain_noop_in_a_row_ms": describe(plain_in_a_row, 3),
            "durable_write_ms": describe(writes, 3),
        }
        figures["leave_vs_plain_client_ms"] = round(
            abs(figures["leave_p50_ms"] - figures["plain_noop_ms"]["p50"]), 2)
        figures["create_endpoint_over_write_ms"] = round(
            rows["CreateEndpoint"]["ms"]["p50"] - figures["durable_write_ms"]["p50"], 2)
        cycle_cpu = {k: round((cpu_after[k] - cpu_before[k]) / steady_cycles, 2)
                     for k in cpu_before}
        figures["met"] = all(meets(name, figures[name]) for name in (
            "join_p50_ms", "leave_p50_ms", "leave_vs_plain_client_ms",
            "create_endpoint_over_write_ms"))
        self.results["rpc"] = {"rpcs": rows, "pace_s": RPC_PACE_S,
                               "plugin_cpu_ms_per_cycle": cycle_cpu, "profile": profile,
                               **figures}

    def _direct_ip(self, host, vxlan, reps):
        """The commands of Join, DeleteEndpoint and DeleteNetwork, handed as one
        batch each to an `ip -batch -` already started in the host's network
        namespace (as the plugin does), timed from the input to the exit: what ip
        itself costs."""
        mac = "02:42:0a:c9:00:fe"
        steps = (  # (figure, lines); a figure of None is not timed
            ("join", [f"link add bdm0 link {vxlan} address {mac} type macvlan mode bridge"]),
            ("delete", ["link delete dev bdm0"]),
            ("first_join", [f"link add bdvx type vxlan id 4299 dev eth0 group {RPC_GROUP} "
                            "dstport 4789", "link set dev bdvx alias bench up",
                            f"link add bdm0 link bdvx address {mac} type macvlan mode bridge"]),
            (None, ["link delete dev bdm0"]),
            ("delete_vxlan", ["link delete dev bdvx"]),
        )
        enter = in_netns(f"/run/netns/{host.netns}")
        samples = collections.defaultdict(list)
        for _ in range(reps):
            for name, lines in steps:
                process = subprocess.Popen(["ip", "-batch", "-"], preexec_fn=enter, text=True,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE)
                time.sleep(0.02)  # started and waiting for its input
                seconds, (_, stderr) = timed(process.communicate, "\n".join(lines) + "\n")
                if process.returncode != 0:
                    raise BenchError(f"direct ip {name} failed: {stderr.strip()}")
                if name:
                    samples[name].append(seconds * 1000)
        return {name: describe(ms) for name, ms in samples.items()}

    def _profile_rpc(self, client, network, cycles=100):
        """py-spy samples the plugin through extra Join/DeleteEndpoint cycles (not
        counted above: sampling slows the plugin).  Writes the raw stacks to
        DIR/rpc-profile.txt and returns where the time went."""
        out_dir = Path(self.args.profile)
        out_dir.mkdir(parents=True, exist_ok=True)
        raw = out_dir / "rpc-profile.txt"
        spy = self.children.start(
            [str(Path(sys.executable).parent / "py-spy"), "record", "-p",
             str(self.h1.plugin_pid), "--rate", "500", "--format", "raw", "-o", str(raw),
             "-d", "600", "--nonblocking"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches
        for i in range(cycles):
            client.cycle(network, f"10.201.1.{i + 1}/24")
        self.children.stop(spy, signal.SIGINT, timeout=20)  # py-spy writes on SIGINT
        return summarize_profile(raw)

    # -- 4. scale -------------------------------------------------------------------------------

    def bench_scale(self):
        """Starts from a fresh plugin, so that what grows is due to the endpoints
        here and not to the requests of the sections before."""
        host = self.h1
        host.stop_plugin()
        host.start_plugin(PLUGIN_ARGS)
        client = PluginClient(host)
        before = {link["ifname"] for link in host.links()}
        networks_count, per_network, probes = 100, 10, 30
        networks, joins, creates = [], [], []
        memory = {"start": vm_status(host.plugin_pid)}

        def probe(network, third_octet):
            """Join p50 of extra endpoints that come and go on a live network."""
            return [client.cycle(network, f"10.{third_octet}.200.{i + 1}/24",
                                 RPC_PACE_S)[1]["Join"] for i in range(probes)]

        try:
            probe_ms = {}
            for n in range(networks_count):
                network = rpc.new_id()
                time.sleep(RPC_PACE_S)
                creates.append(client.create_network(network, 5000 + n, f"10.{100 + n}.0"))
                networks.append((network, []))
                for e in range(per_network):
                    endpoint = rpc.new_id()
                    client.create_endpoint(network, endpoint, f"10.{100 + n}.0.{e + 1}/24")
                    joins.append(client.join(network, endpoint))
                    networks[-1][1].append(endpoint)
                if n == 0:
                    probe_ms["at_10_endpoints"] = probe(network, 100)
                    memory["at_10_endpoints"] = vm_status(host.plugin_pid)
            memory["at_1000_endpoints"] = vm_status(host.plugin_pid)
            probe_ms["at_1000_endpoints"] = probe(networks[-1][0], 100 + networks_count - 1)
            links = count_links(host, before)
        finally:
            cleanup_s, left = self._scale_cleanup(client, host, networks, before)
        memory["after_cleanup"] = vm_status(host.plugin_pid)
        at_10 = statistics.median(probe_ms["at_10_endpoints"])
        at_1000 = statistics.median(probe_ms["at_1000_endpoints"])
        peak_rss = max(m["VmRSS"] for m in memory.values())
        create_first = statistics.median(creates[:10])
        figures = {
            "networks": networks_count, "endpoints_per_network": per_network,
            "links_at_peak": links,
            "join_probe_ms": {k: describe(v) for k, v in probe_ms.items()},
            "join_ratio": ratio(at_1000, at_10),
            "join_p50_by_hundred_endpoints": [round(statistics.median(joins[i:i + 100]), 2)
                                              for i in range(0, len(joins), 100)],
            "create_network_ms": {"first_10": describe(creates[:10]),
                                  "last_10": describe(creates[-10:])},
            "create_network_ratio": ratio(statistics.median(creates[-10:]), create_first),
            "memory_mib": memory, "peak_rss_mib": peak_rss,
            "cleanup_s": round(cleanup_s, 1), "links_left": left,
        }
        figures["met"] = (meets("scale_join_ratio", figures["join_ratio"])
                          and meets("scale_create_network_ratio",
                                    figures["create_network_ratio"])
                          and meets("scale_rss_mib", peak_rss) and not any(left.values()))
        self.results["scale"] = figures

    def _scale_cleanup(self, client, host, networks, before):
        """DeleteEndpoint for every endpoint (4 clients at once), DeleteNetwork for every
        network; returns the seconds it took and the macvlan/vxlan links left over."""
        def delete_network(item):
            network, endpoints = item
            for endpoint in endpoints:
                client.delete_endpoint(network, endpoint)
            client.delete_network(network)

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(delete_network, networks))
        return time.perf_counter() - started, count_links(host, before)

    # -- 5. status ------------------------------------------------------------------------------

    def bench_status(self):
        """`status` against real containers: started 8 at a time, 10 networks, then
        `status --json` 3 times with Docker and 3 times without (what the state
        directory and the kernel alone cost)."""
        host, total, networks = self.h1, self.args.status_containers, 10
        names = [(f"st{n}", f"st{n}c{i}") for n in range(networks)
                 for i in range(total // networks)]
        try:
            for n in range(networks):
                host.docker("network", "create", "-d", PLUGIN, "-o", f"VxlanId={6000 + n}",
                            "-o", f"Group={RPC_GROUP}", "--subnet", f"10.{150 + n}.0.0/22",
                            f"st{n}")
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                start_s, _ = timed(list, pool.map(lambda pair: host.docker(
                    "run", "-d", "--net", pair[0], "--name", pair[1], IMAGE, "sleep", "1d",
                    timeout=300), names))
            with_docker = [self._status(host, host.docker_host) for _ in range(3)]
            without = [self._status(host, "unix:///nonexistent.sock") for _ in range(3)]
        finally:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda n: remove_containers(host, f"st{n}"), range(networks)))
            for n in range(networks):
                host.docker("network", "rm", f"st{n}", check=False)
        report = with_docker[-1][1]
        named = {e["container"]["name"] for net in report["networks"]
                 for e in net["endpoints"] if e["container"] and e["handed_over"]}
        seconds = statistics.median(s for s, _ in with_docker)
        figures = {
            "containers": len(names), "networks": networks, "start_s": round(start_s, 1),
            "status_s": [round(s, 2) for s, _ in with_docker],
            "status_without_docker_s": [round(s, 2) for s, _ in without],
            "named_and_handed_over": len(named & {name for _, name in names}),
            "drift": len(report["drift"]), "docker": report["docker"],
        }
        figures["met"] = (meets("status_s", seconds) and figures["drift"] == 0
                          and figures["named_and_handed_over"] == len(names))
        self.results["status"] = figures

    def _status(self, host, docker_host):
        """(seconds, report) of one `status --json` in the host, as an admin runs it."""
        seconds, done = timed(host.run_in_ns, [
            "env", f"DOCKER_HOST={docker_host}", self.lab.python, "-m", "vxlan", "status",
            "--state-dir", host.plugin_state_dir, *PLUGIN_ARGS, "--json"], timeout=300)
        return seconds, json.loads(done.stdout)

    # -- report ---------------------------------------------------------------------------------

    # -- 6. the image -------------------------------------------------------------------------

    def bench_image(self):
        host = self.h1
        with tempfile.TemporaryDirectory(prefix="dvl-bench-image-") as tmp:
            build_s, _ = timed(host.script, "build-image.sh", "--tag", BENCH_IMAGE,
                               "--base-tar", f"{tmp}/base.tar")
            size = int(host.docker("image", "inspect", "--format", "{{.Size}}",
                                   BENCH_IMAGE).stdout)
            host.script("managed-plugin.sh", "--image", BENCH_IMAGE, f"{tmp}/plugin")
            os.mkdir(f"{tmp}/state")
            try:
                create_s, _ = timed(host.docker, "plugin", "create", MANAGED, f"{tmp}/plugin",
                                    timeout=300)
                host.docker("plugin", "set", MANAGED, f"docker-sock.source={host.sock}",
                            f"state.source={tmp}/state", "VTEPDEV=eth0")
                figures = self._enable_rounds(host)
                figures["rss_mib"]["with_a_container"] = self._memory_in_use(host)
            finally:
                host.docker("rm", "-f", "bench-managed-c", check=False)
                host.docker("network", "rm", MANAGED_NET, check=False)
                host.docker("plugin", "rm", "-f", MANAGED, check=False)
                host.docker("image", "rm", BENCH_IMAGE, check=False)
        self.results["image"] = {
            "image_mb": round(size / 1e6, 1), "image_bytes": size,
            "build_s": round(build_s, 1), "plugin_create_s": round(create_s, 2), **figures,
            "met": meets("image_mb", size / 1e6)}

    def _enable_rounds(self, host):
        """`docker plugin enable`, timed to the socket's first answer and to the
        command's return, then disable; VmRSS after each enable."""
        plugin_id = host.docker("plugin", "inspect", "--format", "{{.Id}}", MANAGED
                                ).stdout.strip()
        # through a descriptor of dockerd's plugin folder: a unix socket's path
        # has at most 107 bytes
        plugins = os.open(f"/proc/{host.dockerd_pid}/root/run/docker/plugins", os.O_RDONLY)
        socket_path = f"/proc/self/fd/{plugins}/{plugin_id}/vxlan.sock"
        answered, returned, memory = [], [], []
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                for _ in range(ENABLE_ROUNDS):
                    started = time.perf_counter()
                    enabling = pool.submit(host.docker, "plugin", "enable", MANAGED, timeout=120)
                    while not answers(socket_path):
                        if enabling.done() and enabling.exception():
                            raise enabling.exception()
                        if time.perf_counter() - started > 60:
                            raise BenchError("the managed plugin's socket did not answer")
                        time.sleep(0.005)
                    answered.append(time.perf_counter() - started)
                    enabling.result()
                    returned.append(time.perf_counter() - started)
                    time.sleep(1)  # what it holds once started, not while it starts
                    memory.append(vm_status(managed_plugin_pid(plugin_id), RSS_PARTS))
                    host.docker("plugin", "disable", MANAGED, timeout=60)
        finally:
            os.close(plugins)
        host.docker("plugin", "enable", MANAGED, timeout=120)
        return {"enable_to_answer_s": describe(answered, 3),
                "enable_command_s": describe(returned, 3),
                "rss_mib": {"idle": {key: statistics.median(m[key] for m in memory)
                                     for key in memory[0]}},
                "plugin_id": plugin_id}

    def _memory_in_use(self, host):
        host.docker("network", "create", "-d", MANAGED, "-o", f"VxlanId={MANAGED_VNI}",
                    "--subnet", f"{MANAGED_SUBNET}.0/24", MANAGED_NET)
        host.docker("run", "-d", "--name", "bench-managed-c", "--net", MANAGED_NET, IMAGE,
                    "sleep", "3600")
        plugin_id = host.docker("plugin", "inspect", "--format", "{{.Id}}", MANAGED
                                ).stdout.strip()
        return vm_status(managed_plugin_pid(plugin_id), RSS_PARTS)

    def machine(self):
        def out(*argv):
            return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        return {
            "nproc": os.cpu_count(), "cpu": cpu.group(1) if cpu else platform.processor(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                / 2**30, 1),
            "kernel": platform.release(),
            "debian": Path("/etc/debian_version").read_text().strip(),
            "docker_engine": self.h1.server_version,
            "docker_cli": self.h1.docker("version", "--format",
                                         "{{.Client.Version}}").stdout.strip(),
            "python": platform.python_version(),
            "iperf3": out("iperf3", "--version").split("\n")[0],
            "commit": out("git", "-C", str(REPO), "rev-parse", "--short", "HEAD"),
            "vxlan_uncommitted_changes": bool(out("git", "-C", str(REPO), "status",
                                                  "--porcelain", "vxlan")),
        }


def count_links(host, before=()):
    """macvlan and vxlan links in a host's network namespace, but those named in
    BEFORE (links from before a section: the reference's hand-made parent, the
    lingering vxlan of the plugin's network)."""
    kinds = collections.Counter(kind_of(link) for link in host.links()
                                if link["ifname"] not in before)
    return {kind: kinds[kind] for kind in ("macvlan", "vxlan")}


def summarize_profile(raw_path, top=12):
    """Shares of py-spy samples: by module of the running (innermost) frame, and
    the functions most often on the stack, with their hottest lines."""
    inclusive, own, lines = collections.Counter(), collections.Counter(), collections.Counter()
    total = 0
    for line in Path(raw_path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        count, frames = int(count), stack.split(";")
        total += count
        names = [re.sub(r":\d+\)$", ")", f) for f in frames]
        for name in set(names):
            inclusive[name] += count
        own[_module_of(frames[-1])] += count
        for frame in frames:
            lines[frame] += count
    if not total:
        return {"samples": 0}
    share = lambda n: round(n / total, 3)  # noqa: E731
    return {
        "samples": total, "raw": str(raw_path),
        "own_time_by_module": {m: share(n) for m, n in own.most_common()},
        "on_stack": {f: share(n) for f, n in inclusive.most_common(top)},
        "hottest_lines": {f: share(n) for f, n in lines.most_common(top * 3)
                          if "subprocess" in f or "vxlan/" in f},
    }


def _module_of(frame):
    path = re.search(r"\(([^:)]*)", frame)
    path = path.group(1) if path else ""
    for marker in ("vxlan/", "subprocess", "gevent/", "bottle", "json/", "threading", "tempfile"):
        if marker in path:
            return marker.strip("/")
    return "other"


# --- output ------------------------------------------------------------------------------------

def table(results):
    """The figures as Markdown tables."""
    out = ["| benchmark | vxlan plugin | macvlan reference | ratio | bar | met |",
           "|---|---|---|---|---|---|"]
    mark = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    start = results.get("start", {}).get("variants", {})
    for variant, label in (("empty", "on an empty network"),
                           ("busy", "next to a running container")):
        if variant in start:
            f = start[variant]
            low, _, high = f["pair_ratio_quartiles"]
            out.append(f"| `docker run --rm` {label}, median of {f['plugin_s']['n']} (s); "
                       f"ratio: median of the interleaved pairs (quartiles {low:.3f}-{high:.3f}) "
                       f"| {f['plugin_s']['p50']:.3f} | {f['reference_s']['p50']:.3f} | "
                       f"{f['median_of_pair_ratios']:.3f} | {bar('start_ratio')} | "
                       f"{mark(f['met'])} |")
    if "parallel" in results:
        f = results["parallel"]
        ok = "/".join(str(r["ok"]) for r in f["rounds"][PLUGIN])
        ok_ref = "/".join(str(r["ok"]) for r in f["rounds"][REFERENCE])
        out.append(f"| {f['containers']} `docker run -d` at once, wall (s); started | "
                   f"{f['plugin_wall_s']:.2f}; {ok} | {f['reference_wall_s']:.2f}; {ok_ref} | "
                   f"{f['ratio']:.3f} | all start, {bar('parallel_ratio')} | {mark(f['met'])} |")
    if "dataplane" in results:
        f = results["dataplane"]
        low, _, high = f["throughput_pair_ratio_quartiles"]
        out.append(f"| TCP throughput, iperf3 {f['iperf3_seconds']} s, median of "
                   f"{f['repetitions']} (Gbit/s); ratio: median of the {f['repetitions']} "
                   f"back-to-back pairs (quartiles {low:.2f}-{high:.2f}) | "
                   f"{f['plugin_gbit_s']:.2f} | {f['reference_gbit_s']:.2f} | "
                   f"{f['throughput_ratio']:.3f} | {bar('throughput_ratio')} | "
                   f"{mark(meets('throughput_ratio', f['throughput_ratio']))} |")
        out.append(f"| ping RTT, median of {f['plugin_rtt_ms']['n']} (ms) | "
                   f"{f['plugin_rtt_ms']['p50']:.3f} | {f['reference_rtt_ms']['p50']:.3f} | "
                   f"{f['rtt_ratio']:.3f} | {bar('rtt_ratio')} | "
                   f"{mark(meets('rtt_ratio', f['rtt_ratio']))} |")
    if "rpc" in results:
        out += ["", *rpc_table(results["rpc"], mark)]
    if "scale" in results:
        f = results["scale"]
        probe, creates = f["join_probe_ms"], f["create_network_ms"]
        memory = f["memory_mib"]
        out += ["", f"Scale ({f['networks']} networks x {f['endpoints_per_network']} "
                    f"endpoints, {f['links_at_peak']} links at the peak): Join p50 "
                    f"{probe['at_10_endpoints']['p50']:.1f} ms at 10 endpoints, "
                    f"{probe['at_1000_endpoints']['p50']:.1f} ms at 1000 "
                    f"(ratio {f['join_ratio']:.2f}, bar {bar('scale_join_ratio')}: "
                    f"{mark(meets('scale_join_ratio', f['join_ratio']))}); CreateNetwork p50 "
                    f"{creates['first_10']['p50']:.1f} ms for the first 10 networks, "
                    f"{creates['last_10']['p50']:.1f} ms for the last 10 (ratio "
                    f"{f['create_network_ratio']:.2f}, bar {bar('scale_create_network_ratio')}: "
                    f"{mark(meets('scale_create_network_ratio', f['create_network_ratio']))}); "
                    f"plugin VmRSS {memory['at_10_endpoints']['VmRSS']:.1f} MiB at 10 endpoints, "
                    f"{memory['at_1000_endpoints']['VmRSS']:.1f} MiB at 1000, "
                    f"{f['peak_rss_mib']:.1f} MiB at most (bar {bar('scale_rss_mib')}: "
                    f"{mark(meets('scale_rss_mib', f['peak_rss_mib']))}); cleanup "
                    f"{f['cleanup_s']:.1f} s, links left {f['links_left']}"]
    if "image" in results:
        f = results["image"]
        enable, returned = f["enable_to_answer_s"], f["enable_command_s"]
        idle, busy = f["rss_mib"]["idle"], f["rss_mib"]["with_a_container"]
        out += ["", f"Image: {f['image_mb']:.1f} MB as `docker image ls` says it (bar "
                    f"{bar('image_mb')} MB: {mark(f['met'])}), built in {f['build_s']:.0f} s; "
                    f"`docker plugin create` {f['plugin_create_s']:.2f} s. From `docker plugin "
                    f"enable` to the socket's first answer: p50 {enable['p50']:.2f} s "
                    f"({enable['min']:.2f}-{enable['max']:.2f}, {enable['n']} rounds); the "
                    f"command returned after p50 {returned['p50']:.2f} s. Plugin VmRSS "
                    f"{idle['VmRSS']:.1f} MiB idle ({idle['RssAnon']:.1f} anonymous, "
                    f"{idle['RssFile']:.1f} file), {busy['VmRSS']:.1f} MiB with a container "
                    f"on one of its networks"]
    if "status" in results:
        f = results["status"]
        out += ["", f"`docker-vxlan-plugin status` with {f['containers']} containers on "
                    f"{f['networks']} networks: {', '.join(map(str, f['status_s']))} s "
                    f"(bar {bar('status_s')} s: {mark(f['met'])}); without Docker to ask "
                    f"{', '.join(map(str, f['status_without_docker_s']))} s; named and "
                    f"handed over: {f['named_and_handed_over']}, drift: {f['drift']}; "
                    f"starting the containers took {f['start_s']} s"]
    return "\n".join(out)


def rpc_table(f, mark):
    def ms(row, key):
        value = row.get(key, {}).get("p50")
        return "" if value is None else f"{value:.1f}"

    out = [f"| RPC on the plugin's socket (ms), {f['pace_s'] * 1000:g} ms apart | n | p50 | "
           "p99 | back to back, p50 | in `ip` p50 | same lines to a waiting `ip -batch -`, "
           "p50 |", "|---|---|---|---|---|---|---|"]
    for name, row in f["rpcs"].items():
        out.append(f"| {name} | {row['ms']['n']} | {row['ms']['p50']:.1f} | "
                   f"{row['ms']['p99']:.1f} | {ms(row, 'back_to_back_ms')} | "
                   f"{ms(row, 'ip_ms')} | {ms(row, 'direct_ip_ms')} |")
    cpu, plain, write = f["plugin_cpu_ms_per_cycle"], f["plain_noop_ms"], f["durable_write_ms"]
    checks = [
        ("Join p50", "join_p50_ms"),
        ("Leave p50", "leave_p50_ms"),
        (f"Leave p50 against a plain keep-alive client's no-op RPC at the same pace "
         f"({plain['p50']:.2f} ms; {f['plain_noop_in_a_row_ms']['p50']:.2f} ms in a row), "
         "difference", "leave_vs_plain_client_ms"),
        (f"CreateEndpoint p50 above one durable state write at the same pace "
         f"({write['p50']:.2f} ms)",
         "create_endpoint_over_write_ms"),
    ]
    out.append("")
    out += [f"- {label}: {f[name]:.2f} ms, bar {bar(name)} ms: {mark(meets(name, f[name]))}"
            for label, name in checks]
    out.append(f"- CPU per paced CreateEndpoint+Join+Leave+DeleteEndpoint: plugin "
               f"{cpu['plugin']:.1f} ms, its helper and the ip processes it started "
               f"{cpu['helper and ip']:.1f} ms")
    return out


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends the run as Ctrl-C does: all is torn down


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results.json"),
                        help="where to write the figures as JSON (default: %(default)s)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default: all of {SECTIONS})")
    parser.add_argument("--runs", type=int, default=21,
                        help="container starts per driver and variant (default: 21)")
    parser.add_argument("--parallel", type=int, default=50,
                        help="containers started at once (default: 50)")
    parser.add_argument("--status-containers", type=int, default=1000,
                        help="running containers for the status section (default: 1000)")
    parser.add_argument("--profile", metavar="DIR",
                        help="also sample the plugin with py-spy during extra RPC cycles")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {SECTIONS}")
    if os.geteuid() != 0:
        parser.error("run as root (the lab makes namespaces and starts dockerd)")

    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    with lablib.Lab(2) as lab:
        children = Children()
        try:
            for host in lab.hosts:
                host.start_plugin(PLUGIN_ARGS)
            bench = Bench(lab, args, children)
            report = {"machine": bench.machine(), "bars": BARS, "results": bench.results}
            bench.set_up_networks()
            for section in SECTIONS:
                if section in sections:
                    t0 = time.monotonic()
                    print(f"bench: {section} ...", file=sys.stderr, flush=True)
                    getattr(bench, f"bench_{section}")()
                    bench.results[section]["seconds"] = round(time.monotonic() - t0, 1)
        finally:
            children.stop_all()  # before the lab goes: they live in its namespaces
    report["total_seconds"] = round(time.monotonic() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    machine = report["machine"]
    print(f"{machine['nproc']} cores ({machine['cpu']}), kernel {machine['kernel']}, "
          f"Docker {machine['docker_engine']}, Python {machine['python']}, "
          f"commit {machine['commit']}; {report['total_seconds']:.0f} s")
    print(table(bench.results))
    print(f"figures written to {args.out}")
    return 0 if all(r.get("met", True) for r in bench.results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
