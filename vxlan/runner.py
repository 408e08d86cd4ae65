"""The only module that runs `ip` and `bridge`, with a timeout on every
command, logging each one in the command log (auditlog.py).

Commands are argv lists whose first word is "ip" or "bridge" (commands.py).
Commands that change the host are fed as lines to a `TOOL -batch -` process,
several of one request to one process (one fork instead of several); the log
still shows each as its own command, exactly as `TOOL LINE` would run it.

Processes are started with subprocess (vfork, then exec: the plugin's memory
is not copied and no Python runs in the child) and waited for in a real thread
of our own pool, because waiting for a child blocks the thread that waits
(subprocess and os are not monkey-patched, see cli._patch_for_gevent). Their
output goes to memory files, so nothing has to drain a pipe; a gevent timeout
kills a process that takes too long. (Through sh, each process cost the plugin
about 7.5 ms of CPU and its child another 8 ms before exec, five times what
subprocess costs: benchmarks/RESULTS.md.)
"""

import fcntl
import json
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
import time

import gevent
import gevent.os
import gevent.socket
from gevent.threadpool import ThreadPool

from . import auditlog
from . import commands as cmd
from .errors import CommandError

COMMAND_TIMEOUT = 10.0  # seconds; Docker waits on us without a timeout of its own
TIMED_OUT = -1000  # the exit code we record for a command we killed
NOT_STARTED = -1001  # ... and for one whose process could not be started
KILL_WAIT = 2.0  # seconds we wait for a killed process to exit


# --- running ----------------------------------------------------------------------

class Ip:
    """Runs ip/bridge commands with a timeout, logging each one.

    Commands that change the host go to a `TOOL -batch -` process on its
    standard input. One such process per tool is started ahead of need and
    waits, idle, for its input: starting a process costs about a millisecond,
    which is then off the path of the request. Each process runs one request's lines and exits, so iproute2's
    name-to-index cache never outlives a request. Queries (`ip -j ... show`)
    carry options before the command and run as their own process.
    """

    def __init__(self, timeout=COMMAND_TIMEOUT, threads=16):
        self._timeout = timeout
        self._pool = ThreadPool(threads)
        self._programs = {}
        self._waiting = {}  # tool -> greenlet whose value is a started `TOOL -batch -`

    def run(self, argv, cause=None):
        """Runs one command and returns its standard output."""
        return self.batch([argv], cause)

    def batch(self, commands, cause=None):
        """Runs the commands in order, stopping at the first that fails, and
        returns the standard output of the last process. `cause` says in the
        command log why they run, when no request explains it.

        On failure raises CommandError whose `.done` lists the commands that
        may have taken effect (all of a batch that was killed), so that the
        caller can undo them.
        """
        done = []
        stdout = ""
        for group in _groups(commands):
            try:
                stdout = self._run_group(group, cause)
            except CommandError as error:
                error.done = done + group[:error.failed_index]
                raise
            done += group
        return stdout

    def link(self, name):
        """`ip -d -j link show dev NAME` as a dict, or None if there is no such link
        (known without a process, when the kernel has no link of that name)."""
        if self.mtu(name) is None:
            return None
        try:
            output = self.run(cmd.show_link(name))
        except CommandError as error:
            if "does not exist" in error.stderr:
                return None
            raise
        links = json.loads(output)
        return links[0] if links else None

    def links(self, kind=None):
        """Every link on this host (or every link of one kind, e.g. vxlan: the kernel
        leaves the others out) as dicts."""
        return json.loads(self.run(cmd.show_links(kind)) or "[]")

    def mtu(self, name):
        """The MTU of link NAME, or None if there is no such link: one system call
        (SIOCGIFMTU) in this network namespace, where `ip` would cost a process."""
        encoded = name.encode(errors="replace")
        if len(encoded) >= 16 or b"\0" in encoded:  # the kernel would read another name
            return None
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                answer = fcntl.ioctl(probe, _SIOCGIFMTU, struct.pack(_IFREQ, encoded, 0))
        except OSError:
            return None
        return struct.unpack(_IFREQ, answer)[1]

    def check_tools(self):
        """Raises CommandError with one sentence unless `ip` and `bridge` are
        iproute2's (busybox's, say, has neither JSON output nor -batch)."""
        install = "install iproute2 (Debian: apt-get install iproute2)"
        for tool in ("ip", "bridge"):
            code, stdout, stderr = self._execute(tool, ["-V"])
            if code == NOT_STARTED:
                raise CommandError(f"`{tool}` was not found on PATH: {install}")
            if not stdout.startswith(f"{tool} utility, "):  # what iproute2's -V says
                raise CommandError(f"`{tool}` ({_found(tool)}) is not iproute2's: {install}")
        code, stdout, _ = self._execute("ip", cmd.show_link("lo")[1:])
        try:
            json.loads(stdout)
        except ValueError:
            raise CommandError(f"`ip` ({_found('ip')}) gives no JSON output (-j): "
                               f"{install}, version 4.14 or newer") from None

    def close(self):
        """Ends the processes waiting for input (no input: they exit at once)."""
        waiting, self._waiting = self._waiting, {}
        for started in waiting.values():
            process = started.get()
            if isinstance(process, _BatchProcess):
                process.finish(b"")

    def _run_group(self, group, cause):
        tool = group[0][0]
        lines = [shlex.join(argv) for argv in group]
        batches = [None] if len(group) == 1 else [
            {"index": i + 1, "size": len(group)} for i in range(len(group))]
        for line, batch in zip(lines, batches):
            auditlog.started(line, batch, cause)
        started = time.monotonic()
        if _batchable(group[0]):
            code, stdout, stderr = self._execute_batch(tool, [argv[1:] for argv in group])
            failed_index = _failed_line(stderr, len(group)) if code else None
            stderr = _BATCH_NOTE.sub("", stderr)
        else:
            code, stdout, stderr = self._execute(tool, group[0][1:])
            failed_index = 0 if code else None
        duration = time.monotonic() - started
        # A process that was killed may have run any of its lines (ip prints
        # nothing for a line that worked): none of them is confirmed either way.
        killed = code < 0 and code != NOT_STARTED
        for index, (line, batch) in enumerate(zip(lines, batches)):
            if killed:
                auditlog.finished(line, batch, f"{_status(code)}, may have run", duration,
                                  stderr, cause)
            elif failed_index is None or index < failed_index:
                auditlog.finished(line, batch, "ok", duration, cause=cause)
            elif index == failed_index:
                auditlog.finished(line, batch, _status(code), duration, stderr, cause)
            else:
                auditlog.finished(line, batch, "not run", 0, cause=cause)
        if killed:
            what = (f"`{lines[0]}`" if len(lines) == 1 else
                    f"`{tool} -batch -` with {len(lines)} commands ({'; '.join(lines)})")
            error = CommandError(f"{what} {_status(code)}: {stderr.strip()}; "
                                 "any of its commands may have run", stderr)
            error.failed_index = len(group)
            raise error
        if failed_index is not None:
            error = CommandError(f"`{lines[failed_index]}` failed: "
                                 f"{stderr.strip() or _status(code)}", stderr)
            error.failed_index = failed_index
            raise error
        return stdout

    def _execute_batch(self, tool, arg_lists):
        """Hands the lines to a waiting `TOOL -batch -` (and starts the next one)."""
        script = "".join(" ".join(args) + "\n" for args in arg_lists).encode()
        waiting = self._waiting.pop(tool, None)
        try:
            return self._feed(tool, waiting, script)
        finally:
            # The next one starts once this one is done, and once the request has
            # answered (a greenlet runs when the request's greenlet waits for the
            # next request), so that it competes with neither. Concurrent requests
            # start their own, and only one waits.
            if tool not in self._waiting:
                self._waiting[tool] = gevent.spawn(self._start_in_pool, tool)

    def _start_in_pool(self, tool):
        return self._pool.spawn(self._start_batch_process, tool).get()

    def _feed(self, tool, waiting, script):
        failure = ""
        for _ in range(2):
            if waiting is None:
                waiting = self._pool.spawn(self._start_batch_process, tool)
            process, waiting = waiting.get(), None
            if isinstance(process, Exception):  # nothing ran
                failure = f"could not start {tool}: {process}"
                continue
            try:
                return self._wait(gevent.spawn(process.finish, script), process.kill)
            except BrokenPipeError:  # it died while waiting, before reading a line
                failure = f"{tool} -batch - exited before reading its input"
        return NOT_STARTED, "", failure

    def _execute(self, tool, args):
        """Runs TOOL ARGS as its own process; returns (exit code, stdout, stderr)."""
        started = {}

        def start_and_wait():
            with _memory_file("vxlan-out") as out, _memory_file("vxlan-err") as err:
                try:
                    started["process"] = subprocess.Popen(
                        [self._program(tool), *args], stdin=subprocess.DEVNULL, stdout=out,
                        stderr=err)
                except OSError as error:  # e.g. the tool is gone: nothing ran
                    return NOT_STARTED, "", f"could not start {tool}: {error}"
                return _exit_code(started["process"]), _read(out), _read(err)

        return self._wait(self._pool.spawn(start_and_wait),
                          lambda: _kill(started.get("process")))

    def _wait(self, result, kill):
        """The result of a task (a greenlet or pool task) that runs a process and
        waits for it, killing the process on timeout."""
        try:
            return result.get(timeout=self._timeout)
        except gevent.Timeout:
            kill()
            note = f"timed out after {self._timeout:g} s and was killed"
            try:
                code, stdout, stderr = result.get(timeout=KILL_WAIT)  # reaped
            except gevent.Timeout:
                return TIMED_OUT, "", f"{note}, and had not exited {KILL_WAIT:g} s later"
            return TIMED_OUT, stdout, f"{stderr}{note}"

    def _start_batch_process(self, tool):
        """A started _BatchProcess, or the error that prevented it: returned, not
        raised, since the start may run before anyone waits for it."""
        try:
            return _BatchProcess(self._program(tool))
        except Exception as error:
            return error

    def _program(self, tool):
        """TOOL's path, found on PATH once: what check_tools checked is what runs."""
        if tool not in self._programs:
            found = shutil.which(tool)
            if found is None:
                raise FileNotFoundError(f"{tool} is not on PATH")
            self._programs[tool] = found
        return self._programs[tool]


class _BatchProcess:
    """`TOOL -batch -`, started and waiting for its lines on standard input.

    It is started in a pool thread (starting blocks), and fed and waited for by
    the request's greenlet, cooperatively: its input is written without
    blocking, and its end is seen on a pidfd the event loop watches. So between
    the request and the kernel there is no thread to wake, only `ip` itself."""

    def __init__(self, program):
        self._out = _memory_file("vxlan-out")
        self._err = _memory_file("vxlan-err")
        try:
            self._process = subprocess.Popen([program, "-batch", "-"], stdin=subprocess.PIPE,
                                             stdout=self._out, stderr=self._err, bufsize=0)
            self._ended = os.pidfd_open(self._process.pid)  # readable once it has exited
        except BaseException:
            self._out.close()
            self._err.close()
            raise
        gevent.os.make_nonblocking(self._process.stdin.fileno())

    def finish(self, script):
        """Writes the lines, closes its input, waits for it; (code, stdout, stderr)."""
        try:
            try:
                with self._process.stdin as stdin:
                    while script:
                        script = script[gevent.os.nb_write(stdin.fileno(), script):]
            finally:  # also when it died before reading: BrokenPipeError
                gevent.socket.wait_read(self._ended)  # it exits at the end of its input
                code = _exit_code(self._process)  # reaps it, without blocking by now
            return code, _read(self._out), _read(self._err)
        finally:
            os.close(self._ended)
            self._out.close()
            self._err.close()

    def kill(self):
        _kill(self._process)


_SIOCGIFMTU = 0x8921
_IFREQ = "16si20x"  # struct ifreq: the name, then ifr_mtu in a 24-byte union


def _found(tool):
    return shutil.which(tool) or tool


def _exit_code(process):
    """Its exit status; minus the signal's number if a signal ended it."""
    return process.wait()


def _read(memory_file):
    memory_file.seek(0)
    return memory_file.read().decode(errors="replace")


def _memory_file(name):
    """A file in memory, not on disk: cheaper than a temporary file, and gone
    with its last descriptor."""
    return os.fdopen(os.memfd_create(name), "w+b")


def _kill(process):
    if process is not None:
        process.kill()  # nothing happens once it has been reaped


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
        return "killed on timeout"
    if code == NOT_STARTED:
        return "not started"
    return f"failed (killed by signal {-code})" if code < 0 else f"failed (exit {code})"
