"""The only module that runs `ip` and `bridge`, and the command log.

Every command is logged before it runs and again with its result, as a line an
admin can paste into a shell: human-readable on stderr, and as JSON Lines in
the audit file. The RPC and the network/endpoint IDs that caused a command are
taken from `request_context`, which api.py sets per request.

Commands are argv lists whose first word is "ip" or "bridge". Several commands
of one tool run as one `TOOL -batch FILE` process (one fork instead of several);
the log still shows each as its own command.

How sh runs under gevent (see lab-notes.md and cli._patch_for_gevent): each
command runs in a real thread of our own pool, because waiting for a child
blocks the thread that waits; output and batch files are memory files handed
to the child, never pipes read by sh's helper threads; and sh's own `_timeout`
is not used (it polls, adding ~100 ms to every command): a gevent timeout
kills the child instead.
"""

import contextvars
import datetime
import json
import logging
import os
import re
import shlex
import time

import gevent
import sh
from gevent.threadpool import ThreadPool

from .errors import CommandError

COMMAND_TIMEOUT = 10.0  # seconds; Docker waits on us without a timeout of its own
OWNER_PREFIX = "docker-vxlan-plugin:"  # the alias that marks links this plugin created
TIMED_OUT = -1000  # the exit code we record for a command we killed
ANY_MAC = "00:00:00:00:00:00"  # fdb entry for broadcast and unknown destinations

request_context = contextvars.ContextVar("request_context", default={})
log = logging.getLogger("vxlan.commands")


# --- the commands -----------------------------------------------------------------

def vxlan_add(name, link_args, vxlan_args):
    return ["ip", "link", "add", name, *link_args, "type", "vxlan", *vxlan_args]


def macvlan_add(name, parent, mac):
    return ["ip", "link", "add", name, "link", parent, "address", mac,
            "type", "macvlan", "mode", "bridge"]


def mark_owned(name, owner_id, up=False):
    """Records in the link itself (its alias) which network or endpoint it serves."""
    return ["ip", "link", "set", "dev", name, "alias", OWNER_PREFIX + owner_id] + (
        ["up"] if up else [])


def link_delete(name):
    return ["ip", "link", "delete", "dev", name]


def fdb_append_flood(dev, peer):
    return ["bridge", "fdb", "append", ANY_MAC, "dev", dev, "dst", peer]


def owner_of(link):
    """The network/endpoint ID a link (as `ip -j link` shows it) was marked with."""
    alias = link.get("ifalias", "")
    return alias[len(OWNER_PREFIX):] if alias.startswith(OWNER_PREFIX) else None


# --- the log ----------------------------------------------------------------------

class CommandLog:
    """Writes each command's start and result to stderr and to the audit file."""

    def __init__(self, audit_path=None):
        self._audit = open(audit_path, "a", buffering=1) if audit_path else None

    def started(self, command, batch):
        context = request_context.get()
        log.info("run %s%s%s", command, _where(context), _batch_note(batch))
        self._write(event="run", cmd=command, batch=batch, **context)

    def finished(self, command, batch, status, duration, stderr=""):
        context = request_context.get()
        seconds = f"{duration * 1000:.1f} ms"
        if status == "ok":
            log.info("ok  %s (%s)%s", command, seconds, _where(context))
        else:
            log.error("%s %s (%s)%s: %s", status, command, seconds, _where(context),
                      stderr.strip() or "no error output")
        self._write(event="result", cmd=command, batch=batch, status=status,
                    duration_ms=round(duration * 1000, 2), stderr=stderr, **context)

    def _write(self, **record):
        if self._audit:
            now = datetime.datetime.now(datetime.timezone.utc)
            record = {"time": now.isoformat(timespec="milliseconds"), **record}
            self._audit.write(json.dumps({k: v for k, v in record.items()
                                          if v not in (None, "")}) + "\n")


def _where(context):
    parts = [f"{key}={context[key][:12]}" for key in ("network", "endpoint") if key in context]
    if "rpc" in context:
        parts.insert(0, context["rpc"])
    return f" [{' '.join(parts)}]" if parts else ""


def _batch_note(batch):
    return f" (batch {batch['index']}/{batch['size']})" if batch else ""


# --- running ----------------------------------------------------------------------

class Ip:
    """Runs ip/bridge commands with a timeout, logging each one."""

    def __init__(self, command_log, timeout=COMMAND_TIMEOUT, threads=16):
        self._log = command_log
        self._timeout = timeout
        self._pool = ThreadPool(threads)
        self._tools = {}

    def run(self, argv):
        """Runs one command and returns its standard output."""
        return self.batch([argv])

    def batch(self, commands):
        """Runs the commands in order, stopping at the first that fails, and
        returns the standard output of the last process.

        On failure raises CommandError whose `.done` lists the commands that
        may have taken effect (all of a batch that timed out), so that the
        caller can undo them.
        """
        done = []
        stdout = ""
        for group in _groups_by_tool(commands):
            try:
                stdout = self._run_group(group)
            except CommandError as error:
                error.done = done + group[:error.failed_index]
                raise
            done += group
        return stdout

    def link(self, name):
        """`ip -d -j link show dev NAME` as a dict, or None if there is no such link."""
        try:
            output = self.run(["ip", "-d", "-j", "link", "show", "dev", name])
        except CommandError as error:
            if "does not exist" in error.stderr:
                return None
            raise
        links = json.loads(output)
        return links[0] if links else None

    def links(self, kind=None):
        """Every link on this host (or every link of one kind, e.g. vxlan) as dicts."""
        argv = ["ip", "-d", "-j", "link", "show"] + (["type", kind] if kind else [])
        return json.loads(self.run(argv) or "[]")

    def _run_group(self, group):
        tool = group[0][0]
        lines = [shlex.join(argv) for argv in group]
        batches = [None] if len(group) == 1 else [
            {"index": i + 1, "size": len(group)} for i in range(len(group))]
        for line, batch in zip(lines, batches):
            self._log.started(line, batch)
        started = time.monotonic()
        if len(group) == 1:
            code, stdout, stderr = self._execute(tool, group[0][1:])
            failed_index = 0 if code else None
        else:
            code, stdout, stderr = self._execute_batch(tool, [argv[1:] for argv in group])
            failed_index = _failed_line(stderr, len(group)) if code else None
        duration = time.monotonic() - started
        for index, (line, batch) in enumerate(zip(lines, batches)):
            if failed_index is None or index < failed_index:
                self._log.finished(line, batch, "ok", duration)
            elif index == failed_index:
                self._log.finished(line, batch, _status(code), duration, stderr)
            else:
                self._log.finished(line, batch, "not run", 0)
        if failed_index is not None:
            error = CommandError(f"`{lines[failed_index]}` failed: "
                                 f"{stderr.strip() or _status(code)}", stderr)
            # a killed batch may have run any of its lines: count them all as done
            error.failed_index = len(group) if code == TIMED_OUT else failed_index
            raise error
        return stdout

    def _execute_batch(self, tool, arg_lists):
        with _memory_file("vxlan-batch") as script:
            for args in arg_lists:
                if any(not arg or re.search(r"[\s\"'\\#]", arg) for arg in args):
                    raise CommandError(f"refusing to batch an argument list {args!r}")
                script.write((" ".join(args) + "\n").encode())
            script.flush()
            # the child inherits the file and opens it anew by its /proc path
            # (sh closes every other descriptor in its children)
            fd = script.fileno()
            os.set_inheritable(fd, True)
            return self._execute(tool, ["-batch", f"/proc/self/fd/{fd}"], pass_fds={fd})

    def _execute(self, tool, args, pass_fds=()):
        """Runs TOOL ARGS in a pool thread; returns (exit code, stdout, stderr)."""
        command = self._tools.get(tool) or self._tools.setdefault(tool, sh.Command(tool))
        started = {}

        def start_and_wait():
            started["process"] = command(*args, _bg=True, _bg_exc=False, _out=out, _err=err,
                                         _ok_code=list(range(256)), _pass_fds=pass_fds)
            try:
                started["process"].wait()
            except sh.SignalException as error:
                return error.exit_code
            return started["process"].exit_code

        with _memory_file("vxlan-out") as out, _memory_file("vxlan-err") as err:
            result = self._pool.spawn(start_and_wait)
            try:
                code = result.get(timeout=self._timeout)
            except gevent.Timeout:
                _kill(started.get("process"))
                result.get()  # reap it
                code = TIMED_OUT
                err.write(f"timed out after {self._timeout:g} s and was killed".encode())
            out.seek(0)
            err.seek(0)
            return code, out.read().decode(errors="replace"), err.read().decode(
                errors="replace")


def _memory_file(name):
    """A file in memory, not on disk: cheaper than a temporary file, and gone
    with its last descriptor."""
    return os.fdopen(os.memfd_create(name), "w+b")


def _kill(process):
    if process is not None:
        try:
            process.kill()
        except ProcessLookupError:
            pass


def _groups_by_tool(commands):
    groups = []
    for argv in commands:
        if groups and groups[-1][0][0] == argv[0]:
            groups[-1].append(argv)
        else:
            groups.append([argv])
    return groups


def _failed_line(stderr, size):
    """Which batch line failed: ip and bridge say 'Command failed FILE:LINE'."""
    match = re.search(r"Command failed .*:(\d+)\s*$", stderr, re.MULTILINE)
    return min(int(match.group(1)) - 1, size - 1) if match else 0


def _status(code):
    if code == TIMED_OUT:
        return "timed out"
    return f"failed (killed by signal {-code})" if code < 0 else f"failed (exit {code})"
