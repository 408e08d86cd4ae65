"""The only module that runs `ip` and `bridge`, and the command log.

Every command is logged before it runs and again with its result, as a line an
admin can paste into a shell: human-readable on stderr, and as JSON Lines in
the audit file. The RPC and the network/endpoint IDs that caused a command are
taken from `request_context`, which api.py sets per request.

Commands are argv lists whose first word is "ip" or "bridge". Commands that
change the host are fed as lines to a `TOOL -batch -` process, several of one
request to one process (one fork instead of several); the log still shows each
as its own command, exactly as `TOOL LINE` would run it.

How sh runs under gevent (see lab-notes.md and cli._patch_for_gevent): each
process is started and waited for in a real thread of our own pool, because
waiting for a child blocks the thread that waits; its standard input is
/dev/null or a pipe we write ourselves and its output goes to memory files, so
sh's helper threads never feed or drain a pipe; and sh's own `_timeout` is not
used (it polls, adding ~100 ms to every command): a gevent timeout kills the
child instead.
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
NOT_STARTED = -1001  # ... and for one whose process could not be started
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


def kind_of(link):
    """"vxlan", "macvlan", ... of a link as `ip -d -j link` shows it."""
    return link.get("linkinfo", {}).get("info_kind")


def data_of(link):
    """The kind's own settings (a vxlan's id, port, ...) as `ip -d -j link` shows them."""
    return link.get("linkinfo", {}).get("info_data", {})


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
    """Runs ip/bridge commands with a timeout, logging each one.

    Commands that change the host go to a `TOOL -batch -` process on its
    standard input. One such process per tool is started ahead of need and
    waits, idle, for its input: starting a process through sh costs several
    milliseconds (it forks the whole plugin), which is then off the path of
    the request. Each process runs one request's lines and exits, so iproute2's
    name-to-index cache never outlives a request. Queries (`ip -j ... show`)
    carry options before the command and run as their own process.
    """

    def __init__(self, command_log, timeout=COMMAND_TIMEOUT, threads=16):
        self._log = command_log
        self._timeout = timeout
        self._pool = ThreadPool(threads)
        self._tools = {}
        self._waiting = {}  # tool -> AsyncResult of a started `TOOL -batch -`

    def run(self, argv):
        """Runs one command and returns its standard output."""
        return self.batch([argv])

    def batch(self, commands):
        """Runs the commands in order, stopping at the first that fails, and
        returns the standard output of the last process.

        On failure raises CommandError whose `.done` lists the commands that
        may have taken effect (all of a batch that was killed), so that the
        caller can undo them.
        """
        done = []
        stdout = ""
        for group in _groups(commands):
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

    def close(self):
        """Ends the processes waiting for input (no input: they exit at once)."""
        waiting, self._waiting = self._waiting, {}
        for started in waiting.values():
            process = started.get()
            if isinstance(process, _BatchProcess):
                process.finish(b"")

    def _run_group(self, group):
        tool = group[0][0]
        lines = [shlex.join(argv) for argv in group]
        batches = [None] if len(group) == 1 else [
            {"index": i + 1, "size": len(group)} for i in range(len(group))]
        for line, batch in zip(lines, batches):
            self._log.started(line, batch)
        started = time.monotonic()
        if _batchable(group[0]):
            code, stdout, stderr = self._execute_batch(tool, [argv[1:] for argv in group])
            failed_index = _failed_line(stderr, len(group)) if code else None
            stderr = _BATCH_NOTE.sub("", stderr)
        else:
            code, stdout, stderr = self._execute(tool, group[0][1:])
            failed_index = 0 if code else None
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
            # a killed process may have run any of its lines: count them all as done
            killed = code < 0 and code != NOT_STARTED
            error.failed_index = len(group) if killed else failed_index
            raise error
        return stdout

    def _execute_batch(self, tool, arg_lists):
        """Hands the lines to a waiting `TOOL -batch -` (and starts the next one)."""
        script = "".join(" ".join(args) + "\n" for args in arg_lists).encode()
        waiting = self._waiting.pop(tool, None)
        try:
            return self._feed(tool, waiting, script)
        finally:
            # the next one starts once this one is done, not competing with it;
            # concurrent requests start their own, and only one waits
            if tool not in self._waiting:
                self._waiting[tool] = self._pool.spawn(_start_batch_process,
                                                       self._command(tool))

    def _feed(self, tool, waiting, script):
        failure = ""
        for _ in range(2):
            process = (waiting or self._pool.spawn(_start_batch_process,
                                                   self._command(tool))).get()
            waiting = None
            if isinstance(process, Exception):  # nothing ran
                failure = f"could not start {tool}: {process}"
                continue
            try:
                return self._wait(self._pool.spawn(process.finish, script), process.kill)
            except BrokenPipeError:  # it died while waiting, before reading a line
                failure = f"{tool} -batch - exited before reading its input"
        return NOT_STARTED, "", failure

    def _execute(self, tool, args):
        """Runs TOOL ARGS as its own process; returns (exit code, stdout, stderr)."""
        started = {}

        def start_and_wait():
            with _memory_file("vxlan-out") as out, _memory_file("vxlan-err") as err:
                started["process"] = self._command(tool)(*args, **_sh_args(_DEVNULL, out, err))
                return _exit_code(started["process"]), _read(out), _read(err)

        return self._wait(self._pool.spawn(start_and_wait),
                          lambda: _kill(started.get("process")))

    def _wait(self, result, kill):
        """The result of a pool task running a process, killing it on timeout."""
        try:
            return result.get(timeout=self._timeout)
        except gevent.Timeout:
            kill()
            code, stdout, stderr = result.get()  # reaped
            return TIMED_OUT, stdout, (
                f"{stderr}timed out after {self._timeout:g} s and was killed")

    def _command(self, tool):
        return self._tools.get(tool) or self._tools.setdefault(tool, sh.Command(tool))


class _BatchProcess:
    """`TOOL -batch -`, started and waiting for its lines on standard input.
    Its methods other than kill block: they run in pool threads."""

    def __init__(self, command):
        read_end, self._stdin = os.pipe()
        self._out = _memory_file("vxlan-out")
        self._err = _memory_file("vxlan-err")
        try:
            with open(read_end, "rb", buffering=0) as stdin:  # the child has its own copy
                self._process = command("-batch", "-", **_sh_args(stdin, self._out, self._err))
        except BaseException:
            os.close(self._stdin)
            self._out.close()
            self._err.close()
            raise

    def finish(self, script):
        """Writes the lines, closes its input, waits for it; (code, stdout, stderr)."""
        try:
            with open(self._stdin, "wb", buffering=0) as stdin:
                stdin.write(script)
            return _exit_code(self._process), _read(self._out), _read(self._err)
        finally:
            self._out.close()
            self._err.close()

    def kill(self):
        _kill(self._process)


def _start_batch_process(command):
    """A started _BatchProcess, or the error that prevented it: returned, not
    raised, since the start may run before anyone waits for it."""
    try:
        return _BatchProcess(command)
    except Exception as error:
        return error


def _sh_args(stdin, out, err):
    """How sh runs our processes: standard input, output and error are files
    (sh then needs no pipe and no thread to feed or drain them), any exit code
    is returned rather than raised, and the wait is ours (see the module doc)."""
    return dict(_bg=True, _bg_exc=False, _in=stdin, _out=out, _err=err, _ok_code=_ANY_EXIT)


def _exit_code(process):
    try:
        process.wait()
    except sh.SignalException as error:
        return error.exit_code
    return process.exit_code


def _read(memory_file):
    memory_file.seek(0)
    return memory_file.read().decode(errors="replace")


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


_ANY_EXIT = list(range(256))
_DEVNULL = open(os.devnull, "rb")  # the standard input of queries
_BATCH_NOTE = re.compile(r"^Command failed .*\n?", re.MULTILINE)


def _batchable(argv):
    """Whether a command can be a line of `TOOL -batch -`: no options before
    the command, and no word that the batch parser would split or quote."""
    return not argv[1].startswith("-") and all(
        arg and not re.search(r"[\s\"'\\#]", arg) for arg in argv[1:])


def _groups(commands):
    """Runs of batchable commands of one tool; any other command on its own."""
    groups = []
    for argv in commands:
        last = groups[-1] if groups else None
        if last and _batchable(argv) and _batchable(last[0]) and last[0][0] == argv[0]:
            last.append(argv)
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
    if code == NOT_STARTED:
        return "not started"
    return f"failed (killed by signal {-code})" if code < 0 else f"failed (exit {code})"
