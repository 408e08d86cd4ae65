"""The only module that runs `ip` and `bridge` (started through sh by its
helper, spawner.py), with a timeout on every command, logging each one in the
command log (auditlog.py).

Commands are argv lists whose first word is "ip" or "bridge" (commands.py),
or, for `status`, a shell that runs `ip` in containers' namespaces.
Commands that change the host are fed as lines to a `TOOL -batch -` process,
several of one request to one process (one fork instead of several); the log
still shows each as its own command, exactly as `TOOL LINE` would run it.

Processes are started by a helper process (spawner.py), through sh: sh forks
the process that asks, and a fork of the plugin (45 MiB) costs milliseconds of
CPU and page faults on its next request. We hand the helper each child's
standard input (/dev/null or a pipe we write ourselves) and its output and
error (files in memory), get back a pidfd to kill it by, and its exit code once
it has ended. A gevent timeout kills a child that runs too long.
"""

import array
import fcntl
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import sys
import time

import gevent
import gevent.os
import gevent.socket
import sh
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from . import auditlog, spawner
from . import commands as cmd
from .errors import CommandError

COMMAND_TIMEOUT = 10.0  # seconds; Docker waits on us without a timeout of its own
TIMED_OUT = -1000  # the exit code we record for a command we killed
NOT_STARTED = -1001  # ... and for one whose process could not be started
HELPER_ENDED = -1002  # ... and for one whose helper ended before it told its exit
KILL_WAIT = 2.0  # seconds we wait for a killed process to exit


# --- running ----------------------------------------------------------------------

class Ip:
    """Runs ip/bridge commands with a timeout, logging each one.

    Commands that change the host go to a `TOOL -batch -` process on its
    standard input. One such process per tool is started ahead of need and
    waits, idle, for its input: starting a process costs the helper several
    milliseconds, which are then off the path of the request. Each process
    runs one request's lines and exits, so iproute2's name-to-index cache
    never outlives a request. Queries (`ip -j ... show`)
    carry options before the command and run as their own process.
    """

    def __init__(self, timeout=COMMAND_TIMEOUT):
        self._timeout = timeout
        self._spawner = None
        self._spawner_starting = Semaphore()
        self._waiting = {}  # tool -> greenlet whose value is a started `TOOL -batch -`

    def run(self, argv):
        """Runs one command and returns its standard output."""
        return self.batch([argv])

    def batch(self, commands, cause=None):
        """Runs the commands in order, stopping at the first that fails, and
        returns the standard output of the last process. `cause` says in the
        command log why they run: they run in the background, and no request
        waits for them.

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
        """Every link on this host (or every link of one kind, e.g. vxlan) as dicts."""
        return json.loads(self.run(cmd.show_links(kind)) or "[]")

    def fdb(self, dev):
        """The forwarding entries of DEV (`bridge -j fdb show`) as dicts."""
        return json.loads(self.run(cmd.show_fdb(dev)) or "[]")

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
        """Ends the processes waiting for input (no input: they exit at once),
        then the helper."""
        waiting, self._waiting = self._waiting, {}
        for started in waiting.values():
            process = started.get()
            if isinstance(process, _BatchProcess):
                process.close()  # its input ends unwritten: it runs nothing
        if self._spawner is not None:
            self._spawner.close()

    def _run_group(self, group, cause):
        tool = group[0][0]
        lines = [shlex.join(argv) for argv in group]
        batches = [None] if len(group) == 1 else [
            {"index": i + 1, "size": len(group)} for i in range(len(group))]
        for line, batch in zip(lines, batches):
            auditlog.started(line, batch, cause)
        started = time.monotonic()
        if _batchable(group[0]):
            code, stdout, stderr = self._execute_batch(tool, [argv[1:] for argv in group],
                                                       in_background=cause is not None)
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
                auditlog.finished(line, batch, f"{_status(code)}, {auditlog.MAY_HAVE_RUN}",
                                  duration, stderr, cause)
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

    def _execute_batch(self, tool, arg_lists, in_background):
        """Hands the lines to a waiting `TOOL -batch -` (and starts the next one)."""
        script = "".join(" ".join(args) + "\n" for args in arg_lists).encode()
        waiting = self._waiting.pop(tool, None)
        if in_background:  # no answer to wait for: the next one starts while this one runs
            self._replace_waiting(tool)
        try:
            return self._feed(tool, waiting, script)
        finally:
            # The next one starts once this one is done and the request has
            # answered. Concurrent requests start their own, and only one waits.
            self._replace_waiting(tool)

    def _replace_waiting(self, tool):
        if tool not in self._waiting:
            self._waiting[tool] = self._after_answer(self._start_batch_process, tool)

    def _after_answer(self, function, *args):
        """A greenlet whose value is FUNCTION(*ARGS), run once the request has
        answered (a new greenlet runs when the request's waits for the next
        request): the helper's work would otherwise compete with the answer."""
        return gevent.spawn(function, *args)

    def _feed(self, tool, waiting, script):
        failure = ""
        for _ in range(2):
            process = waiting.get() if waiting is not None else self._start_batch_process(tool)
            waiting = None
            if isinstance(process, Exception):  # nothing ran
                failure = f"could not start {tool}: {process}"
                continue
            try:
                process.write(script)
            except BrokenPipeError:  # it died while waiting, before reading a line
                failure = f"{tool} -batch - exited before reading its input"
                process.close()
                continue
            try:
                code, note = self._exit_of(process.child)
                return code, process.stdout(), process.stderr() + note
            finally:
                process.close()
        return NOT_STARTED, "", failure

    def _execute(self, tool, args):
        """Runs TOOL ARGS as its own process; returns (exit code, stdout, stderr)."""
        with _memory_file("vxlan-out") as out, _memory_file("vxlan-err") as err:
            try:
                child = self._start([tool, *args], _DEVNULL.fileno(), out.fileno(), err.fileno())
            except _NotStarted as error:
                return NOT_STARTED, "", f"could not start {tool}: {error}"
            try:
                code, note = self._exit_of(child)
            finally:
                child.close()
            return code, _read(out), _read(err) + note

    def _exit_of(self, child):
        """(exit code, note for its standard error) of a started child, killed
        if it runs longer than the timeout."""
        try:
            return child.exited.get(timeout=self._timeout), ""
        except gevent.Timeout:
            child.kill()
            note = f"timed out after {self._timeout:g} s and was killed"
            try:
                child.exited.get(timeout=KILL_WAIT)
            except gevent.Timeout:
                return TIMED_OUT, f"{note}, and had not exited {KILL_WAIT:g} s later"
            except _HelperEnded:
                pass
            return TIMED_OUT, note
        except _HelperEnded as error:
            child.kill()  # nobody would reap it: it must not run on unseen
            return HELPER_ENDED, str(error)

    def _start(self, argv, stdin, stdout, stderr):
        """A started _Child (raises _NotStarted): the helper is started at first
        need, and again if it has ended."""
        with self._spawner_starting:
            if self._spawner is None or not self._spawner.running:
                self._spawner = _Spawner()
        return self._spawner.start(argv, stdin, stdout, stderr)

    def _start_batch_process(self, tool):
        """A started _BatchProcess, or the error that prevented it: returned, not
        raised, since the start may run before anyone waits for it."""
        try:
            return _BatchProcess(self, tool)
        except Exception as error:
            return error


class _BatchProcess:
    """`TOOL -batch -`, started and waiting for its lines on its standard input
    (a pipe we write without blocking)."""

    def __init__(self, ip, tool):
        read_end, self._stdin = os.pipe()
        self._out = _memory_file("vxlan-out")
        self._err = _memory_file("vxlan-err")
        try:
            self.child = ip._start([tool, "-batch", "-"], read_end, self._out.fileno(),
                                   self._err.fileno())
        except BaseException:
            os.close(self._stdin)
            self._out.close()
            self._err.close()
            raise
        finally:
            os.close(read_end)  # the child has its own copy
        gevent.os.make_nonblocking(self._stdin)

    def write(self, script):
        """Writes the lines and closes its input: it runs them and exits.
        BrokenPipeError if it ended before reading them."""
        try:
            while script:
                script = script[gevent.os.nb_write(self._stdin, script):]
        finally:
            os.close(self._stdin)
            self._stdin = None

    def stdout(self):
        return _read(self._out)

    def stderr(self):
        return _read(self._err)

    def close(self):
        """Frees its files (and kills it if it still runs, its input unwritten)."""
        if self._stdin is not None:
            os.close(self._stdin)
            self._stdin = None
        self.child.close()
        self._out.close()
        self._err.close()


class _NotStarted(Exception):
    """The helper could not start a process (the message says why)."""


class _HelperEnded(Exception):
    """The helper ended before it told a child's exit."""


class _Child:
    """A process the helper started: its pidfd, and its exit code once reaped."""

    def __init__(self):
        self.started = AsyncResult()  # its pidfd, or _NotStarted
        self.exited = AsyncResult()  # its exit code (-SIGNAL if killed), or _HelperEnded
        self.pidfd = None

    def kill(self):
        if self.pidfd is None:
            return  # it had ended when the helper answered
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it has ended

    def close(self):
        """Forgets it; kills it if it is still running (nobody waits for it)."""
        if self.pidfd is not None:
            if not self.exited.ready():
                self.kill()
            os.close(self.pidfd)
            self.pidfd = None


class _Spawner:
    """Our end of the helper (spawner.py): a SOCK_SEQPACKET socket on its
    standard input, and a greenlet that reads what it answers."""

    def __init__(self):
        self._socket, theirs = gevent.socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._children = {}  # request number -> _Child
        self._numbers = itertools.count()
        try:
            # sh blocks for the fork, and forks this whole process: once, in a thread
            self._helper = gevent.get_hub().threadpool.apply(
                sh.Command(sys.executable),
                ["-P", spawner.__file__],  # sh and the standard library only
                dict(_in=theirs, _out=sys.__stderr__, _err=sys.__stderr__, _bg=True,
                     _bg_exc=False, _ok_code=spawner.ANY_EXIT))
        except BaseException:
            self._socket.close()
            raise
        finally:
            theirs.close()
        self.running = True
        self._reader = gevent.spawn(self._read)

    def start(self, argv, stdin, stdout, stderr):
        number = next(self._numbers)
        child = self._children[number] = _Child()
        message = json.dumps({"id": number, "argv": argv}).encode()
        fds = array.array("i", [stdin, stdout, stderr])
        try:
            self._socket.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            child.pidfd = child.started.get()
        except OSError as error:  # the helper has ended
            self._children.pop(number, None)
            raise _NotStarted(f"the helper that starts processes is gone ({error})") from None
        return child

    def _read(self):
        try:
            while True:
                data, fds = spawner.receive(self._socket)
                if not data:
                    break
                message = json.loads(data)
                child = self._children.get(message["id"])
                if child is None:
                    for fd in fds:
                        os.close(fd)
                elif "pid" in message:
                    child.started.set(fds[0] if fds else None)
                elif "error" in message:
                    del self._children[message["id"]]
                    child.started.set_exception(_NotStarted(message["error"]))
                else:
                    del self._children[message["id"]]
                    child.exited.set(message["exit"])
        except OSError:
            pass
        finally:
            self.running = False
            children, self._children = self._children, {}
            for child in children.values():
                ended = _HelperEnded("the helper that started it ended: its exit is unknown")
                if not child.started.ready():
                    child.started.set_exception(_NotStarted(str(ended)))
                child.exited.set_exception(ended)

    def close(self):
        """Closes our end: the helper reads its end and exits; waits for it."""
        self._socket.close()
        self._reader.join(KILL_WAIT)
        try:
            self._helper.wait(timeout=KILL_WAIT)
        except sh.TimeoutException:
            self._helper.kill()


def _found(tool):
    return shutil.which(tool) or tool


def _read(memory_file):
    memory_file.seek(0)
    return memory_file.read().decode(errors="replace")


def _memory_file(name):
    """A file in memory, not on disk: cheaper than a temporary file, and gone
    with its last descriptor."""
    return os.fdopen(os.memfd_create(name), "w+b")


_DEVNULL = open(os.devnull, "rb")  # the standard input of queries
_SIOCGIFMTU = 0x8921
_IFREQ = "16si20x"  # struct ifreq: the name, then ifr_mtu in a 24-byte union
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
    if code == HELPER_ENDED:
        return "lost (its helper ended)"
    return f"failed (killed by signal {-code})" if code < 0 else f"failed (exit {code})"
