#!/usr/bin/env python3
"""A lab of Docker hosts on one machine, for the end-to-end tests (stdlib only).

Each host is a network namespace with an ``eth0`` on a private underlay
(192.0.2.0/24 and 2001:db8::/64, both documentation ranges) and its own
dockerd.  The hosts' ``eth0`` are the ends of veth pairs whose other ends sit on
a Linux bridge in a third namespace, the "switch".  Nothing is created in the
root network namespace and no traffic leaves these namespaces.

Each dockerd runs in a private mount and UTS namespace of its own, with a tmpfs
on /run/docker (so the host's plugin socket, /run/docker/plugins/NAME.sock, is
private to it) and on /etc/docker.  A plugin for a host is started inside the
same mount, network and UTS namespace (``Host.start_plugin``).

In Python::

    import lab
    with lab.Lab(2) as l:
        h1, h2 = l.hosts
        h1.docker("network", "ls")
        plugin = h1.start_plugin(["--debug"])

From a shell (the lab stays up until ``down``)::

    python scripts/lab.py up 2
    python scripts/lab.py status
    python scripts/lab.py down            # labs made by "up"; --all: every lab

Every name carries a per-lab prefix (``dvl`` + 4 random characters), so labs
running side by side, or left over, never collide.  ``Lab.down`` stops every
process by PID (SIGTERM, wait, SIGKILL), deletes the namespaces and removes the
lab's directory; it is safe after a partial ``up`` and safe to call twice.
A lab records itself in /run/dvl-lab/PREFIX.json while it exists; a lab whose
owning process died (a killed test run) is torn down by the next Lab.up().

The plugin runs with DVL_PYTHON, else REPO/.venv/bin/python, else this Python;
the docker CLI is DVL_DOCKER, else Debian's /usr/bin/docker, else the first on PATH.

Other Docker engines: ``Lab(2, engine="trixie")`` runs each host's dockerd
from another Debian release's docker.io (trixie: Engine 26, sid: Engine 28):
the host's mount namespace has as its root a root of that release, which
debootstrap makes once per machine and keeps in
/var/cache/docker-vxlan-plugin-lab (remove that directory to drop them; a root
that is missing or was made by another recipe is made again).  Such a host's
docker CLI is the release's own, run in that root; its plugin and
``run_in_ns`` commands are this machine's, run in the host's network and UTS
namespace only, and the plugin's socket is in DIR/plugins, which is that
dockerd's /run/docker/plugins.
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import io
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import stat
import string
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REGISTRY = Path("/run/dvl-lab")
IMAGE = "busybox-local:latest"
PLUGIN_SOCKET = "/run/docker/plugins/vxlan.sock"     # where a host's dockerd looks
NETNS_RE = re.compile(r"^(dvl[a-z0-9]{4})-(sw|h\d+)$")

DOCKERD_START_TIMEOUT = 60.0
DOCKERD_STOP_TIMEOUT = 5.0
PLUGIN_START_TIMEOUT = 20.0
PLUGIN_STOP_TIMEOUT = 10.0


class LabError(RuntimeError):
    """The lab could not do what was asked (the message says why)."""


class CommandError(subprocess.CalledProcessError):
    """A command failed; unlike CalledProcessError, str() shows its output."""

    def __str__(self) -> str:
        cmd = self.cmd if isinstance(self.cmd, str) else " ".join(map(str, self.cmd))
        text = f"command {cmd!r} exited {self.returncode}"
        for label, out in (("stdout", self.stdout), ("stderr", self.stderr)):
            if out and out.strip():
                text += f"\n--- {label} ---\n{out.strip()[-4000:]}"
        return text


def run(cmd, *, check=True, timeout=30.0, input=None, env=None) -> subprocess.CompletedProcess:
    """Runs cmd (a list), captures its output as text; raises CommandError if check."""
    try:
        res = subprocess.run(cmd, input=input, capture_output=True, text=True,
                             timeout=timeout, env=env, stdin=None if input is not None
                             else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"command {cmd!r} timed out after {timeout} s\n"
                       f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}") from None
    if check and res.returncode != 0:
        raise CommandError(res.returncode, cmd, res.stdout, res.stderr)
    return res


# --------------------------------------------------------------------------
# processes, identified by PID and start time (so a reused PID is never hit)

def _proc_stat(pid: int):
    """(state, ppid, starttime) of a process, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _starttime(pid: int):
    st = _proc_stat(pid)
    return st[2] if st else None


def alive(pid, starttime=None) -> bool:
    """True if pid runs (not a zombie) and, when given, started at starttime."""
    if not pid:
        return False
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return starttime is None or st[2] == starttime


def _kill(pid, starttime, sig) -> None:
    if alive(pid, starttime):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_processes(procs, timeout: float, sig=signal.SIGTERM) -> None:
    """Stops each (pid, starttime): sig, wait up to timeout, then SIGKILL."""
    procs = [(p, s) for p, s in procs if alive(p, s)]
    for p, s in procs:
        _kill(p, s, sig)
    deadline = time.monotonic() + timeout
    while any(alive(p, s) for p, s in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p, s in procs:
        _kill(p, s, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(alive(p, s) for p, s in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p, s in procs if alive(p, s)]
    if left:
        raise LabError(f"processes {left} survived SIGKILL")


def stop_popen(popen, sig=signal.SIGTERM, timeout=5.0):
    """Sends sig to a process we started, waits up to timeout, then SIGKILL.
    Returns its exit status (negative: killed by that signal)."""
    if popen.poll() is None:
        popen.send_signal(sig)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(10)
    return popen.returncode


def _ns_id(pid, kind: str):
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _family(mnt_ids: set, net_ids: set) -> list:
    """(pid, starttime) of every process in one of those mount or network
    namespaces, and of all their descendants (container processes)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st:
                table[int(entry)] = st
    members = {pid for pid in table
               if _ns_id(pid, "mnt") in mnt_ids or _ns_id(pid, "net") in net_ids}
    members.discard(os.getpid())
    children = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(members)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in members:
                members.add(child)
                todo.append(child)
    return [(pid, table[pid][2]) for pid in sorted(members)]


def _container_inits(procs) -> list:
    """The processes among procs whose parent is a containerd shim."""
    def comm(pid):
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return ""
    shims = {pid for pid, _ in procs if comm(pid).startswith("containerd-shim")}
    return [(pid, start) for pid, start in procs
            if (_proc_stat(pid) or (0, 0))[1] in shims]


def _netns_list() -> list:
    res = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def _tail(path, chars=6000) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return text[-chars:]


def _default_python() -> str:
    if os.environ.get("DVL_PYTHON"):
        return os.environ["DVL_PYTHON"]
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _docker_cli() -> str:
    # Debian's client comes with the engine and speaks its API version; a newer
    # client found first on PATH refuses some flags (run --mac-address with
    # --net needs API 1.44).
    debian_client = "/usr/bin/docker"
    return (os.environ.get("DVL_DOCKER") or
            (debian_client if os.path.exists(debian_client) else shutil.which("docker")) or
            "docker")


# --------------------------------------------------------------------------
# Debian roots, for the Docker engines of other releases

ROOTS = Path("/var/cache/docker-vxlan-plugin-lab")
MIRROR = "http://deb.debian.org/debian"
ENGINE_PACKAGES = ("docker.io", "docker-cli", "iproute2", "busybox-static")
ROOT_BUILD_TIMEOUT = 900.0
# sid's Release file at the archive copy reachable here has expired
APT_GET = ["apt-get", "-q", "-o", "Acquire::Check-Valid-Until=false"]
# what runs in a root sees a plain Debian environment, not this one's
ROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C",
            "DEBIAN_FRONTEND": "noninteractive"}


def debian_root(release: str, packages=(), name: str = None, cache: Path = ROOTS) -> Path:
    """A directory holding Debian RELEASE (debootstrap's minbase) with PACKAGES
    installed (without recommends), made once and kept as CACHE/NAME (default:
    RELEASE); made again when missing or made by another recipe.  A build holds
    a lock, so runs side by side make a root once.  No package's service starts
    in it (policy-rc.d), and dpkg does not sync (force-unsafe-io)."""
    name = name or release
    recipe = json.dumps({"release": release, "mirror": MIRROR, "packages": list(packages),
                         "dpkg": "force-unsafe-io"})
    root, stamp = cache / name, cache / f"{name}.recipe"
    base = debian_root(release, cache=cache) if packages else None   # before the lock
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root.is_dir() and stamp.exists() and stamp.read_text() == recipe:
            return root
        stamp.unlink(missing_ok=True)
        building = cache / f"{name}.building"
        for path in (root, building):
            shutil.rmtree(path, ignore_errors=True)
        if packages:
            run(["cp", "-a", str(base), str(building)])
            in_root(building, [*APT_GET, "update"], timeout=ROOT_BUILD_TIMEOUT)
            in_root(building, [*APT_GET, "install", "-y", "--no-install-recommends",
                               *packages], timeout=ROOT_BUILD_TIMEOUT)
            in_root(building, [*APT_GET, "clean"])
        else:
            run(["debootstrap", "--variant=minbase", release, str(building), MIRROR],
                timeout=ROOT_BUILD_TIMEOUT, env=dict(os.environ, **ROOT_ENV))
            policy = building / "usr" / "sbin" / "policy-rc.d"
            policy.write_text("#!/bin/sh\n# lab.py: no service starts in this root\nexit 101\n")
            policy.chmod(0o755)
            # a throwaway root: dpkg need not sync every file (halves install times)
            (building / "etc" / "dpkg" / "dpkg.cfg.d" / "lab-unsafe-io").write_text(
                "force-unsafe-io\n")
        building.rename(root)
        stamp.write_text(recipe)
        return root


def engine_root(release: str) -> Path:
    """The root of RELEASE's Docker engine (docker.io, its CLI, iproute2, busybox)."""
    return debian_root(release, ENGINE_PACKAGES, f"{release}-engine")


def in_root(root, cmd, *, timeout=120.0, check=True, mounts="",
            env=None) -> subprocess.CompletedProcess:
    """Runs cmd chrooted in ROOT, with /proc and /dev, in a mount namespace of
    its own (its mounts end with it), in a plain environment (ROOT_ENV, and
    ENV).  MOUNTS: shell lines to run first, with $ROOT set (e.g. to mount an
    overlay there)."""
    script = (f'set -e\n{mounts}\nmount -t proc proc "$ROOT/proc"\n'
              'mount --rbind /dev "$ROOT/dev"\nexec chroot "$ROOT" "$@"\n')
    return run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                "in-root", *map(str, cmd)], timeout=timeout, check=check,
               env=dict(ROOT_ENV, **(env or {}), ROOT=str(root)))


def _machine_engine_mounts() -> str:
    """Shell lines, run in a host's new mount namespace, that make /run/docker,
    /etc/docker and /run/containerd its own (the machine's engine); makes the
    mount points."""
    for mount_point in ("/run/docker", "/run/containerd"):    # empty dirs
        os.makedirs(mount_point, exist_ok=True)
    return (
        "mount -t tmpfs -o mode=0755 tmpfs /run/docker\n"
        "mkdir -p /run/docker/plugins\n"
        "if [ -d /etc/docker ]; then mount -t tmpfs -o mode=0755 tmpfs /etc/docker; fi\n"
        # containerd's shims put sockets in /run/containerd/s whatever
        # containerd's own root; and a containerd.sock of the machine's
        # there would be used by every host's dockerd
        "mount -t tmpfs -o mode=0711 tmpfs /run/containerd\n")


def _engine_root_mounts(root, lab_dir, plugin_dir) -> str:
    """Shell lines, run in a host's new mount namespace, that make ROOT its
    root (pivot_root: with a mere chroot, `docker exec` would land in this
    machine's root, the mount namespace's).  What dockerd, containerd (in
    /opt/containerd) and the CLI write goes to tmpfs or to the lab's directory,
    mounted at its own path so that paths mean the same inside and out: the
    cached root stays as it was.  PLUGIN_DIR (made here) becomes its
    /run/docker/plugins."""
    if not str(lab_dir).startswith("/tmp/"):   # /tmp is a tmpfs in the root
        raise LabError(f"a lab on another engine needs its directory under /tmp, not {lab_dir}")
    os.makedirs(plugin_dir, exist_ok=True)
    root, lab_dir, plugin_dir = (shlex.quote(str(p)) for p in (root, lab_dir, plugin_dir))
    return (
        f"mount --bind {root} {root}\n"                 # pivot_root wants a mount point
        + "".join(f"mount --rbind /{d} {root}/{d}\n" for d in ("proc", "sys", "dev"))
        + "".join(f"mount -t tmpfs -o mode=0755 tmpfs {root}/{d}\n"
                  for d in ("run", "tmp", "root", "opt", "etc/docker"))
        + f"mkdir -p {root}/run/docker/plugins {root}{lab_dir}\n"
        f"mount --bind {lab_dir} {root}{lab_dir}\n"
        f"mount --bind {plugin_dir} {root}/run/docker/plugins\n"
        # pivot_root(".", ".") stacks the old root on the new one; unmount it
        f"cd {root}\npivot_root . .\numount -l .\ncd /\n")


# --------------------------------------------------------------------------

class Host:
    """One Docker host of a lab: a network namespace with eth0 on the
    underlay, and a dockerd of its own (in its own mount and UTS namespace)."""

    def __init__(self, lab: "Lab", index: int):
        self.lab = lab
        self.index = index
        self.name = f"h{index}"                      # also its hostname
        self.netns = f"{lab.prefix}-h{index}"
        self.underlay_ip = f"192.0.2.{10 + index}"
        self.underlay_ip6 = f"2001:db8::{10 + index}"
        self.dir = os.path.join(lab.dir, self.name)
        self.sock = os.path.join(self.dir, "docker.sock")
        self.dockerd_pid = None
        self.dockerd_start = None                    # start time, to check the PID
        self.mnt_ns = None                           # "mnt:[N]" of dockerd
        self.plugin_pid = None
        self.plugin_start = None
        self._dockerd_popen = None
        self._dockerd_argv = None                    # to start it again the same way
        self._holder = None                          # (pid, start) holding the host's namespaces
        self._plugin_popen = None
        self.server_version = None                   # dockerd's, once it answered

    def __repr__(self):
        return f"<Host {self.name} {self.netns} {self.underlay_ip} dockerd={self.dockerd_pid}>"

    @property
    def docker_host(self) -> str:
        """The DOCKER_HOST value for this host's dockerd."""
        return f"unix://{self.sock}"

    @property
    def dockerd_log(self) -> str:
        return os.path.join(self.dir, "dockerd.log")

    @property
    def plugin_log_path(self) -> str:
        return os.path.join(self.dir, "plugin.log")

    @property
    def audit_log_path(self) -> str:
        return os.path.join(self.dir, "audit.jsonl")

    @property
    def plugin_dir(self) -> str:
        """/run/docker/plugins of a host on another release's engine."""
        return os.path.join(self.dir, "plugins")

    @property
    def plugin_state_dir(self) -> str:
        return os.path.join(self.dir, "plugin-state")

    # -- commands ------------------------------------------------------------

    def docker(self, *args, check=True, timeout=60.0, input=None) -> subprocess.CompletedProcess:
        """Runs the docker CLI against this host's dockerd."""
        env = dict(os.environ, DOCKER_CLI_HINTS="false")
        env.pop("DOCKER_HOST", None)
        env.pop("DOCKER_CONTEXT", None)
        # another release's client runs in its root, where the lab's directory
        # is mounted at its own path
        cli = ([*self._engine_ns_prefix(), "docker"] if self.lab.root else [_docker_cli()])
        return run([*cli, "-H", self.docker_host, *map(str, args)],
                   check=check, timeout=timeout, input=input, env=env)

    def script(self, name, *args, timeout=600.0) -> subprocess.CompletedProcess:
        """Runs scripts/NAME (build-image.sh, managed-plugin.sh) against this
        host's dockerd; raises CommandError, with its output, if it fails."""
        env = dict(os.environ, DOCKER_HOST=self.docker_host)
        env.pop("DOCKER_CONTEXT", None)
        return run(["bash", str(REPO / "scripts" / name), *map(str, args)], timeout=timeout,
                   env=env)

    def _ns_pid(self) -> int:
        """A process in this host's namespaces: dockerd, or while dockerd
        restarts, the process that holds them (see restart_dockerd)."""
        for pid, start in ((self.dockerd_pid, self.dockerd_start), self._holder or (None, None)):
            if alive(pid, start):
                return pid
        raise LabError(f"{self.name}: dockerd is not running")

    def nsenter_prefix(self) -> list:
        """The command prefix that enters this host with this machine's
        commands: its network and UTS namespace, and its mount namespace if
        it runs the machine's engine (another release's has its root there)."""
        mount = [] if self.lab.root else ["-m"]
        return ["nsenter", "-t", str(self._ns_pid()), *mount, "-n", "-u", "--"]

    def _engine_ns_prefix(self) -> list:
        """The command prefix that enters dockerd's namespaces, mount included."""
        return ["nsenter", "-t", str(self._ns_pid()), "-m", "-n", "-u", "--"]

    def run_in_ns(self, cmd, *, check=True, timeout=30.0, input=None) -> subprocess.CompletedProcess:
        """Runs cmd (a list, or a string for sh -c) inside this host."""
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        return run(self.nsenter_prefix() + [str(c) for c in cmd],
                   check=check, timeout=timeout, input=input)

    def ping(self, address: str, count: int = 1, wait: int = 2, check=True):
        """Pings address from this host's namespace (busybox ping)."""
        return self.run_in_ns(["busybox", "ping", "-c", count, "-W", wait, address],
                              check=check, timeout=count * wait + 10)

    def links(self) -> list:
        """`ip -d -j link show` inside this host, parsed."""
        return json.loads(self.run_in_ns(["ip", "-d", "-j", "link", "show"]).stdout or "[]")

    # -- dockerd ---------------------------------------------------------------

    def _start_dockerd(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        config = os.path.join(self.dir, "daemon.json")
        Path(config).write_text("{}\n")
        dockerd = [
            "dockerd", "--config-file", config,
            "--data-root", os.path.join(self.dir, "data"),
            "--exec-root", "/run/docker/exec",
            "-H", self.docker_host,
            "--pidfile", os.path.join(self.dir, "docker.pid"),
            "--bridge=none", "--iptables=false", "--ip-masq=false",
            "--shutdown-timeout=2",
        ]
        self._dockerd_argv = dockerd
        # Inside a private mount namespace: drop the copies of /run/netns
        # (else they would keep other labs' namespaces alive), give the host
        # its own /run and /etc/docker, become dockerd.
        script = (
            "set -e\n"
            f"hostname {self.name}\n"
            "umount -R -l /run/netns 2>/dev/null || true\n"
            + (_engine_root_mounts(self.lab.root, self.lab.dir, self.plugin_dir) if self.lab.root
               else _machine_engine_mounts()) +
            'exec "$@"\n'
        )
        # unshare and nsenter (no -F needed: it forks only for a PID
        # namespace) exec in place, and so does sh: this PID becomes dockerd.
        self._spawn_dockerd(["unshare", "-m", "-u", "--propagation", "private",
                             "nsenter", f"--net=/run/netns/{self.netns}",
                             "sh", "-c", script, "dvl-host", *dockerd])

    def _spawn_dockerd(self, argv) -> None:
        """Runs ARGV, which execs dockerd in place, with its output in dockerd_log."""
        with open(self.dockerd_log, "ab") as log:
            self._dockerd_popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd="/")
        self.dockerd_pid = self._dockerd_popen.pid
        self.dockerd_start = _starttime(self.dockerd_pid)

    def restart_dockerd(self, while_stopped=None, while_starting=None,
                        stop_timeout=30.0, timeout=DOCKERD_START_TIMEOUT) -> None:
        """Stops dockerd by PID with SIGTERM (it stops its containers, as at a
        host's shutdown; SIGKILL after stop_timeout), calls while_stopped(),
        starts dockerd again with the same arguments in the same namespaces,
        calls while_starting() (dockerd may not answer yet), and waits until
        it answers.  Meanwhile a `sleep` holds the host's namespaces (and so
        /run/docker/plugins) and stands in for dockerd in nsenter_prefix(),
        so that start_plugin() works while dockerd is down."""
        holder = subprocess.Popen(
            self._engine_ns_prefix() + ["sleep", "infinity"],
            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._holder = (holder.pid, _starttime(holder.pid))
            stop_processes([(self.dockerd_pid, self.dockerd_start)], stop_timeout)
            if self._dockerd_popen is not None:
                self._dockerd_popen.wait(5)
            if while_stopped:
                while_stopped()
            self._spawn_dockerd(self._engine_ns_prefix() + self._dockerd_argv)  # nsenter execs
            self.lab._save()
            if while_starting:
                while_starting()
            self._wait_dockerd(time.monotonic() + timeout)
        finally:
            self._holder = None
            holder.kill()
            holder.wait()

    def _wait_dockerd(self, deadline: float) -> None:
        while True:
            if self._dockerd_popen is not None and self._dockerd_popen.poll() is not None:
                raise LabError(f"{self.name}: dockerd exited with {self._dockerd_popen.returncode}"
                               f"\n--- {self.dockerd_log} ---\n{_tail(self.dockerd_log)}")
            if os.path.exists(self.sock):
                try:
                    res = self.docker("info", "--format", "{{.ServerVersion}}", check=False,
                                      timeout=10)
                except LabError:  # a restarting dockerd holds requests while it restores
                    res = None
                if res is not None and res.returncode == 0 and res.stdout.strip():
                    self.server_version = res.stdout.strip()
                    break
            if time.monotonic() > deadline:
                raise LabError(f"{self.name}: dockerd did not answer in time"
                               f"\n--- {self.dockerd_log} ---\n{_tail(self.dockerd_log)}")
            time.sleep(0.1)
        self.mnt_ns = _ns_id(self.dockerd_pid, "mnt")

    # -- plugin ----------------------------------------------------------------

    def start_plugin(self, args=(), env=None, *, socket_activated=False,
                     timeout=PLUGIN_START_TIMEOUT) -> subprocess.Popen:
        """Starts the plugin (``python -m vxlan``) inside this host and waits
        until its socket PLUGIN_SOCKET accepts connections (for another
        release's engine, the plugin runs outside that engine's root, its
        socket in plugin_dir, which dockerd sees as /run/docker/plugins).

        The plugin gets --socket, --state-dir DIR/plugin-state and --audit-log
        DIR/audit.jsonl, then args; DOCKER_HOST points at this host's dockerd
        (env adds to or overrides the environment).  Output is appended to
        DIR/plugin.log.  Returns the Popen, whose pid is the plugin's own.

        socket_activated: systemd-socket-activate holds the socket, as a
        .socket unit does, and execs the plugin in its place (same pid) at the
        first connection; this returns once the socket listens, connecting to
        nothing, so the plugin is not running yet."""
        if self._plugin_popen is not None and self._plugin_popen.poll() is None:
            raise LabError(f"{self.name}: a plugin is already running (pid {self.plugin_pid})")
        sock = os.path.join(self.plugin_dir, "vxlan.sock") if self.lab.root else PLUGIN_SOCKET
        plugin_env = {"DOCKER_HOST": self.docker_host, "PYTHONUNBUFFERED": "1", **(env or {})}
        activator = []
        if socket_activated:  # it hands the plugin only LISTEN_* and the variables of -E
            activator = ["systemd-socket-activate", "-l", sock,
                         *(f"--setenv={name}={value}" for name, value in plugin_env.items())]
        cmd = self.nsenter_prefix() + activator + [
            self.lab.python, "-m", "vxlan",
            "--socket", sock,
            "--state-dir", self.plugin_state_dir,
            "--audit-log", self.audit_log_path,
            *map(str, args)]
        full_env = dict(os.environ, **plugin_env)
        outside = f"/proc/{self._ns_pid()}/root{PLUGIN_SOCKET}"
        before = _sock_id(outside)
        ready = ((lambda: listening(self._ns_pid(), sock)) if socket_activated else
                 (lambda: _sock_id(outside) not in (None, before) and connects(outside)))
        with open(self.plugin_log_path, "ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} start: {' '.join(cmd)}\n".encode())
            log.flush()
            popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, env=full_env,
                                     cwd=str(REPO), start_new_session=True)
        self._plugin_popen = popen
        self.plugin_pid = popen.pid                  # nsenter execs in place
        self.plugin_start = _starttime(popen.pid)
        self.lab._save()
        deadline = time.monotonic() + timeout
        while True:
            if popen.poll() is not None:
                raise LabError(f"{self.name}: plugin exited with {popen.returncode} before "
                               f"its socket was up\n--- {self.plugin_log_path} ---\n"
                               f"{_tail(self.plugin_log_path)}")
            if ready():
                return popen
            if time.monotonic() > deadline:
                self.stop_plugin(signal.SIGKILL)
                raise LabError(f"{self.name}: plugin socket {sock} not up after {timeout} s"
                               f"\n--- {self.plugin_log_path} ---\n{_tail(self.plugin_log_path)}")
            time.sleep(0.05)

    def plugin_running(self) -> bool:
        return alive(self.plugin_pid, self.plugin_start)

    def stop_plugin(self, sig=signal.SIGTERM, timeout=PLUGIN_STOP_TIMEOUT):
        """Sends sig to the plugin (by PID), waits up to timeout, then SIGKILL.
        Returns its exit status (negative: killed by that signal), None if no
        plugin was started."""
        popen = self._plugin_popen
        if popen is None:
            if self.plugin_pid:                       # a lab loaded from its record
                stop_processes([(self.plugin_pid, self.plugin_start)], timeout, sig)
                self.plugin_pid = None
            return None
        return stop_popen(popen, sig, timeout)

    def plugin_log(self) -> str:
        """All the plugin has printed on this host (every start, appended)."""
        try:
            return Path(self.plugin_log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def audit_records(self) -> list:
        """The plugin's audit log (JSON lines) as a list of dicts."""
        try:
            lines = Path(self.audit_log_path).read_text().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1:               # being written right now
                    break
                raise
        return records

    # -- record ------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "index", "name", "netns", "underlay_ip", "underlay_ip6", "dir", "sock",
            "dockerd_pid", "dockerd_start", "mnt_ns", "plugin_pid", "plugin_start")}


def _sock_id(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns) if stat.S_ISSOCK(st.st_mode) else None


def connects(path) -> bool:
    """Whether something accepts connections on the unix socket PATH."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def listening(pid, path) -> bool:
    """Whether a unix socket bound at PATH listens in the network namespace
    of process PID (read from /proc, without connecting to it)."""
    with open(f"/proc/{pid}/net/unix") as table:
        next(table)                              # Num RefCount Protocol Flags Type St Inode Path
        for line in table:
            fields = line.split()
            if fields[7:8] == [path] and int(fields[3], 16) & 0x10000:   # __SO_ACCEPTCON
                return True
    return False


# --------------------------------------------------------------------------

class Lab:
    """N Docker hosts on a switched underlay.  Use as a context manager, or
    call up() and down() (down is always safe to call)."""

    def __init__(self, n: int = 1, *, image: bool = True, python: str = None,
                 ipv6: bool = True, persistent: bool = False, engine: str = None):
        if n < 1 or n > 200:
            raise ValueError("a lab has 1 to 200 hosts")
        self.n = n
        self.image = image
        self.engine = engine                  # the Debian release whose docker.io runs,
        self.root = ""                        # and its root once up; None, "": the machine's
        self.python = python or _default_python()
        self.ipv6 = ipv6
        self.persistent = persistent          # made by "lab.py up": no atexit down
        self.prefix = None
        self.dir = None
        self.switch_ns = None
        self.hosts = []
        self._atexit = False
        self.owner = (os.getpid(), _starttime(os.getpid()))
        self.timings = {}                     # seconds: root, network, dockerd, image, up, down

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def __repr__(self):
        return f"<Lab {self.prefix} hosts={len(self.hosts)} dir={self.dir}>"

    @property
    def record(self) -> Path:
        return REGISTRY / f"{self.prefix}.json"

    # -- up ------------------------------------------------------------------

    def up(self) -> "Lab":
        """Creates the switch, the hosts and their dockerd (and the busybox
        image if image=True).  On any failure it tears down what it made."""
        if self.prefix is not None:
            raise LabError("this lab is already up")
        _check_tools(self.image, self.engine)
        reap_stale_labs()
        if self.engine:
            started = time.monotonic()
            self.root = str(engine_root(self.engine))   # made unless cached
            self.timings["root"] = time.monotonic() - started
        t0 = time.monotonic()
        taken = set(_netns_list())
        REGISTRY.mkdir(parents=True, exist_ok=True)
        while True:
            prefix = "dvl" + "".join(random.choices(string.ascii_lowercase + string.digits, k=4))
            if not any(ns.startswith(prefix + "-") for ns in taken) and \
                    not (REGISTRY / f"{prefix}.json").exists():
                break
        self.prefix = prefix
        self.switch_ns = f"{prefix}-sw"
        self.dir = tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp" if self.root else None)
        self.hosts = [Host(self, i) for i in range(1, self.n + 1)]
        if not self.persistent:
            atexit.register(self.down)
            self._atexit = True
        try:
            self._save()
            self._make_network()
            t1 = time.monotonic()
            for h in self.hosts:
                h._start_dockerd()
            self._save()
            deadline = time.monotonic() + DOCKERD_START_TIMEOUT
            for h in self.hosts:
                h._wait_dockerd(deadline)
            self._save()
            t2 = time.monotonic()
            if self.image:
                for h in self.hosts:
                    ensure_image(h)
            t3 = time.monotonic()
            self.timings.update(network=t1 - t0, dockerd=t2 - t1, image=t3 - t2, up=t3 - t0)
        except BaseException:
            self.down()
            raise
        return self

    def _make_network(self) -> None:
        sw = self.switch_ns
        run(["ip", "netns", "add", sw])
        run(["ip", "-n", sw, "link", "set", "lo", "up"])
        run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge",
             "forward_delay", "0", "mcast_snooping", "0"])
        run(["ip", "-n", sw, "link", "set", "br0", "up"])
        for h in self.hosts:
            run(["ip", "netns", "add", h.netns])
            run(["ip", "-n", sw, "link", "add", h.name, "type", "veth",
                 "peer", "name", "eth0", "netns", h.netns])
            run(["ip", "-n", sw, "link", "set", h.name, "master", "br0", "up"])
            batch = ["link set lo up",
                     f"addr add {h.underlay_ip}/24 dev eth0"]
            if self.ipv6:
                batch.append(f"addr add {h.underlay_ip6}/64 dev eth0 nodad")
            batch.append("link set eth0 up")
            run(["ip", "-n", h.netns, "-batch", "-"], input="\n".join(batch) + "\n")

    # -- down ----------------------------------------------------------------

    def down(self) -> None:
        """Stops every process of the lab by PID, deletes its namespaces and
        its directory.  Safe after a partial up, and safe to call twice."""
        if self.prefix is None:
            return
        t0 = time.monotonic()
        errors = []
        live_ns = set(_netns_list())
        # Who belongs to the lab, taken before anything stops (container
        # processes are found as descendants of the hosts' processes).
        mnt_ids = {h.mnt_ns for h in self.hosts
                   if h.mnt_ns and h.netns in live_ns}
        mnt_ids |= {_ns_id(h.dockerd_pid, "mnt") for h in self.hosts
                    if alive(h.dockerd_pid, h.dockerd_start)}
        net_ids = set()
        for ns in [h.netns for h in self.hosts] + [self.switch_ns]:
            if ns in live_ns:
                try:
                    net_ids.add(f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]")
                except OSError:
                    pass
        mnt_ids.discard(None)
        mnt_ids.discard(_ns_id("self", "mnt"))
        net_ids.discard(_ns_id("self", "net"))
        family = _family(mnt_ids, net_ids)

        def attempt(what, fn, *args):
            try:
                fn(*args)
            except Exception as exc:  # keep going: tear down all we can
                errors.append(f"{what}: {exc}")

        # Kill the containers' processes first, by PID: on SIGTERM dockerd
        # would give each its stop timeout (10 s; busybox as PID 1 ignores
        # SIGTERM), and `docker kill` hangs while dockerd calls a stopped plugin.
        attempt("kill containers", stop_processes, _container_inits(family), 2.0, signal.SIGKILL)
        # Then dockerd (its clean-up may still call the plugin), then the
        # plugin.  A graceful stop buys nothing here (every mount and link
        # goes with the namespaces), so dockerd gets a short grace time.
        # (A host whose plugin was started and is gone gets no grace time:
        # its dockerd would wait on the plugin.)
        for orphaned in (False, True):
            dockerds = [(h.dockerd_pid, h.dockerd_start) for h in self.hosts
                        if h.dockerd_pid and orphaned == bool(h.plugin_pid and not h.plugin_running())]
            attempt("stop dockerd", stop_processes, dockerds,
                    0.5 if orphaned else DOCKERD_STOP_TIMEOUT)
        for h in self.hosts:
            attempt(f"{h.name}: stop plugin", h.stop_plugin, signal.SIGTERM, 5.0)
        attempt("stop the rest", stop_processes, family, 2.0)
        for h in self.hosts:
            for popen in (h._dockerd_popen, h._plugin_popen):
                if popen is not None and popen.poll() is None:
                    attempt("reap", popen.wait, 5)
        for ns in [h.netns for h in self.hosts] + [self.switch_ns]:
            if ns in live_ns:
                res = run(["ip", "netns", "del", ns], check=False)
                if res.returncode != 0:
                    errors.append(f"ip netns del {ns}: {res.stderr.strip()}")
        if self.dir and os.path.isdir(self.dir):
            attempt("remove " + self.dir, shutil.rmtree, self.dir)
        try:
            self.record.unlink()
        except FileNotFoundError:
            pass
        if self._atexit:
            atexit.unregister(self.down)
            self._atexit = False
        self.timings["down"] = time.monotonic() - t0
        self.prefix = None
        if errors:
            raise LabError("lab teardown incomplete:\n" + "\n".join(errors))

    # -- record ----------------------------------------------------------------

    def _save(self) -> None:
        data = {
            "prefix": self.prefix, "dir": self.dir, "switch_ns": self.switch_ns,
            "persistent": self.persistent, "python": self.python,
            "engine": self.engine, "root": self.root,
            "owner_pid": self.owner[0], "owner_start": self.owner[1],
            "hosts": [h.to_dict() for h in self.hosts],
        }
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.record)

    @classmethod
    def load(cls, path) -> "Lab":
        """The lab a record (REGISTRY/PREFIX.json) describes, to down() it."""
        data = json.loads(Path(path).read_text())
        lab = cls(max(1, len(data["hosts"])), persistent=data.get("persistent", False),
                  python=data.get("python"), engine=data.get("engine"))
        lab.root = data.get("root", "")
        lab.prefix, lab.dir, lab.switch_ns = data["prefix"], data["dir"], data["switch_ns"]
        lab.owner = (data.get("owner_pid"), data.get("owner_start"))
        lab.hosts = []
        for hd in data["hosts"]:
            h = Host(lab, hd["index"])
            for k, v in hd.items():
                setattr(h, k, v)
            lab.hosts.append(h)
        return lab

    def status(self) -> dict:
        live_ns = set(_netns_list())
        return {
            "prefix": self.prefix, "dir": self.dir, "persistent": self.persistent,
            "switch_ns": self.switch_ns, "switch_up": self.switch_ns in live_ns,
            "hosts": [dict(name=h.name, netns=h.netns, netns_up=h.netns in live_ns,
                           underlay_ip=h.underlay_ip, underlay_ip6=h.underlay_ip6,
                           docker_host=h.docker_host, dockerd_pid=h.dockerd_pid,
                           dockerd_running=alive(h.dockerd_pid, h.dockerd_start),
                           plugin_pid=h.plugin_pid, plugin_running=h.plugin_running())
                      for h in self.hosts],
        }

    # -- image -------------------------------------------------------------------

    def image_tar(self) -> str:
        """A rootfs tar of busybox-static with a link per applet (made once
        per lab, in the lab's directory)."""
        path = os.path.join(self.dir, "busybox-local.tar")
        if os.path.exists(path):  # written aside and renamed: whole if there
            return path
        busybox = shutil.which("busybox")
        if not busybox:
            raise LabError("busybox not found: install busybox-static (scripts/install.sh --test)")
        busybox = os.path.realpath(busybox)
        with open(busybox, "rb") as f:
            if b"ld-linux" in f.read(8192):
                raise LabError(f"{busybox} is dynamically linked: install busybox-static")
        applets = run([busybox, "--list"]).stdout.split()
        with tarfile.open(path + ".tmp", "w") as tar:
            def add(name, type_=tarfile.DIRTYPE, mode=0o755, data=None, link=None):
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.mtime = type_, mode, int(time.time())
                if link:
                    info.linkname = link
                if data is not None:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                else:
                    tar.addfile(info)
            for d in ("bin", "etc", "dev", "proc", "sys", "root", "var"):
                add(d)
            add("tmp", mode=0o1777)
            add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
            add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
            tar.add(busybox, arcname="bin/busybox")
            for applet in sorted(set(applets) | {"true", "sh"}):
                if applet != "busybox":
                    add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        os.replace(path + ".tmp", path)
        return path


def ensure_image(host: Host, name: str = IMAGE) -> None:
    """Imports busybox-local:latest (busybox-static) into host, if missing."""
    if host.docker("image", "inspect", name, check=False).returncode == 0:
        return
    host.docker("import", "-c", 'CMD ["sh"]', host.lab.image_tar(), name, timeout=120)


def _check_tools(image: bool, engine: str) -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root")
    tools = ["ip", "unshare", "nsenter", "mount"]
    # another release's engine comes in its root, which debootstrap makes
    tools += ["debootstrap", "pivot_root"] if engine else ["dockerd", "containerd", "runc"]
    if image:
        tools.append("busybox")
    missing = [t for t in tools if not shutil.which(t)]
    if not engine and not shutil.which(_docker_cli()):
        missing.append("docker")
    if missing:
        raise LabError(f"missing {', '.join(missing)}: run scripts/install.sh --test")


# --------------------------------------------------------------------------

def registered_labs() -> list:
    """Every lab recorded in REGISTRY, loaded."""
    labs = []
    for path in sorted(REGISTRY.glob("dvl*.json")):
        try:
            labs.append(Lab.load(path))
        except (OSError, ValueError, KeyError) as exc:
            print(f"lab: skipping unreadable {path}: {exc}", file=sys.stderr)
    return labs


def reap_stale_labs() -> list:
    """Tears down labs whose owning process is gone (a test run that was
    killed), except those made by `lab.py up`.  Returns their prefixes."""
    reaped = []
    for lab in registered_labs():
        if not lab.persistent and not alive(*lab.owner):
            prefix = lab.prefix
            try:
                lab.down()
            except Exception as exc:  # never let an old lab stop a new one
                print(f"lab: stale lab {prefix}: {exc}", file=sys.stderr)
            reaped.append(prefix)
    return reaped


def orphan_namespaces() -> list:
    """Namespaces named like a lab's that no recorded lab owns."""
    known = {lab.prefix for lab in registered_labs()}
    return [ns for ns in _netns_list()
            if NETNS_RE.match(ns) and NETNS_RE.match(ns).group(1) not in known]


def remove_namespace(ns: str) -> None:
    """Stops every process in netns ns (and in the mount namespaces of those
    processes, and their descendants), then deletes ns."""
    net_id = f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]"
    inside = _family(set(), {net_id})
    mnt_ids = {_ns_id(p, "mnt") for p, _ in inside} - {_ns_id("self", "mnt"), None}
    stop_processes(_family(mnt_ids, {net_id}), DOCKERD_STOP_TIMEOUT)
    run(["ip", "netns", "del", ns])


# --------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lab.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="bring up a lab of N hosts (stays up until down)")
    p_up.add_argument("n", type=int, nargs="?", default=2)
    p_up.add_argument("--no-image", action="store_true", help="skip the busybox-local image")
    p_up.add_argument("--no-ipv6", action="store_true")
    p_up.add_argument("--python", help="the python the plugin runs with")
    p_up.add_argument("--engine", metavar="RELEASE",
                      help="run the docker.io of this Debian release (e.g. trixie, sid), "
                           "from a root kept in " + str(ROOTS))
    p_down = sub.add_parser("down", help="tear down labs made by `up` (or the named ones)")
    p_down.add_argument("prefix", nargs="*")
    p_down.add_argument("--all", action="store_true",
                        help="every recorded lab, and namespaces named like a lab's")
    sub.add_parser("status", help="show recorded labs")
    args = parser.parse_args(argv)

    if args.cmd == "up":
        lab = Lab(args.n, image=not args.no_image, ipv6=not args.no_ipv6,
                  python=args.python, persistent=True, engine=args.engine).up()
        print(f"lab {lab.prefix} up in {lab.timings['up']:.1f} s (dir {lab.dir})")
        for h in lab.hosts:
            docker = f"nsenter -t {h.dockerd_pid} -m -- docker" if lab.root else "docker"
            print(f"  {h.name}: netns {h.netns}  eth0 {h.underlay_ip} {h.underlay_ip6}  "
                  f"Docker Engine {h.server_version}\n"
                  f"      {docker} -H {h.docker_host} ...\n"
                  f"      nsenter -t {h.dockerd_pid} -m -n -u -- sh")
        print(f"down: python {sys.argv[0]} down {lab.prefix}")
        return 0

    if args.cmd == "status":
        labs = registered_labs()
        for lab in labs:
            print(json.dumps(lab.status(), indent=1))
        orphans = orphan_namespaces()
        if orphans:
            print("namespaces of no recorded lab:", " ".join(orphans))
        if not labs and not orphans:
            print("no labs")
        return 0

    # down
    rc = 0
    for lab in registered_labs():
        if args.all or lab.prefix in args.prefix or (not args.prefix and lab.persistent):
            prefix = lab.prefix
            try:
                lab.down()
                print(f"lab {prefix} down")
            except LabError as exc:
                print(f"lab {prefix}: {exc}", file=sys.stderr)
                rc = 1
    if args.all:
        for ns in orphan_namespaces():
            try:
                remove_namespace(ns)
                print(f"namespace {ns} removed")
            except (LabError, OSError) as exc:
                print(f"namespace {ns}: {exc}", file=sys.stderr)
                rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
