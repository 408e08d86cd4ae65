"""The only module that runs `ip` and `bridge` (through sh), with a timeout on
every command, logging each one in the command log (auditlog.py).

Commands are argv lists whose first word is "ip" or "bridge" (commands.py),
or, for `status`, a shell that runs `ip` in containers' namespaces.
Commands that change the host are fed as lines to a `TOOL -batch -` process,
several of one request to one process (one fork instead of several); the log
still shows each as its own command, exactly as `TOOL LINE` would run it.

How sh runs under gevent (see cli._patch_for_gevent): each
process is started and reaped in a real thread of our own pool, because
sh blocks the thread that does it (a `TOOL -batch -` is fed and its end seen
by the request's greenlet in between: _BatchProcess); its standard input is
/dev/null or a pipe we write ourselves and its output goes to memory files, so
sh's helper threads never feed or drain a pipe; and sh's own `_timeout` is not
used (it polls, adding ~100 ms to every command): a gevent timeout kills the
child instead.
"""

import fcntl
import json
import os
import re
import shlex
import shutil
import socket
import struct
import time

import gevent
import gevent.os
import gevent.socket
import sh
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
    waits, idle, for its input: starting a process through sh costs several
    milliseconds (it forks the whole plugin), which is then off the path of
    the request. Each process runs one request's lines and exits, so iproute2's
    name-to-index cache never outlives a request. Queries (`ip -j ... show`)
    carry options before the command and run as their own process.
    """

    def __init__(self, timeout=COMMAND_TIMEOUT):
        self._timeout = timeout
        self._pool = ThreadPool(16)
        self._tools = {}
        self._waiting = {}  # tool -> greenlet whose value is a started `TOOL -batch -`

    def run(self, argv):
        """Runs one command and returns its standard output."""
        return self.batch([argv])

    def batch(self, commands, cause=None):
        """Runs the commands in order, stopping at the first that fails, and
        returns the standard output of the last process. `cause` says in the
        command log why they run, where no request explains it.

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
        """Ends the processes waiting for input (no input: they exit at once)."""
        waiting, self._waiting = self._waiting, {}
        for started in waiting.values():
            process = started.get()
            if isinstance(process, _BatchProcess):
                try:
                    process.finish(b"")
                except BrokenPipeError:
                    pass  # it had ended already
                finally:
                    process.reap()

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

    def _execute_batch(self, tool, arg_lists):
        """Hands the lines to a waiting `TOOL -batch -` (and starts the next one)."""
        script = "".join(" ".join(args) + "\n" for args in arg_lists).encode()
        waiting = self._waiting.pop(tool, None)
        try:
            return self._feed(tool, waiting, script)
        finally:
            # The next one starts once this one is done and the request has
            # answered. Concurrent requests start their own, and only one waits.
            if tool not in self._waiting:
                self._waiting[tool] = self._after_answer(self._start_batch_process, tool)

    def _after_answer(self, function, *args):
        """A greenlet whose value is FUNCTION(*ARGS), run in a pool thread once the
        request has answered (a new greenlet runs when the request's waits for
        the next request): sh holds the interpreter for several ms to start or
        reap a process, which the answer would otherwise wait for."""
        return gevent.spawn(lambda: self._pool.spawn(function, *args).get())

    def _feed(self, tool, waiting, script):
        failure = ""
        for _ in range(2):
            if waiting is None:
                waiting = self._pool.spawn(self._start_batch_process, tool)
            process, waiting = waiting.get(), None
            if isinstance(process, Exception):  # nothing ran
                failure = f"could not start {tool}: {process}"
                continue
            finishing = gevent.spawn(process.finish, script)
            try:
                return self._wait(finishing, process.kill)
            except BrokenPipeError:  # it died while waiting, before reading a line
                failure = f"{tool} -batch - exited before reading its input"
            finally:
                finishing.kill()  # still waiting only if it outlived the kill
                self._after_answer(process.reap)  # sh's bookkeeping
        return NOT_STARTED, "", failure

    def _execute(self, tool, args):
        """Runs TOOL ARGS as its own process; returns (exit code, stdout, stderr)."""
        started = {}

        def start_and_wait():
            with _memory_file("vxlan-out") as out, _memory_file("vxlan-err") as err:
                try:
                    started["process"] = self._command(tool)(
                        *args, **_sh_args(_DEVNULL, out, err))
                except Exception as error:  # e.g. the tool is gone: nothing ran
                    return NOT_STARTED, "", f"could not start {tool}: {error}"
                return _exit_code(started["process"]), _read(out), _read(err)

        return self._wait(self._pool.spawn(start_and_wait),
                          lambda: _kill(started.get("process")))

    def _wait(self, result, kill):
        """The result of a task (a greenlet or a pool task) that runs a process and
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

    def _command(self, tool):
        """sh's Command for TOOL, found on PATH once (sh.CommandNotFound if not)."""
        return self._tools.get(tool) or self._tools.setdefault(tool, sh.Command(tool))

    def _start_batch_process(self, tool):
        """A started _BatchProcess, or the error that prevented it: returned, not
        raised, since the start may run before anyone waits for it."""
        try:
            return _BatchProcess(self._command(tool))
        except Exception as error:
            return error


class _BatchProcess:
    """`TOOL -batch -`, started through sh and waiting for its lines on its
    standard input.

    It is started in a pool thread (starting blocks), and fed and waited for by
    the request's greenlet: its input is written without blocking, and its end
    is seen on a pidfd the event loop watches, its status read without reaping
    it (waitid WNOWAIT). sh reaps it afterwards, in a pool thread (reap), off
    the request's path: between the request and the kernel no thread is woken."""

    def __init__(self, command):
        read_end, self._stdin = os.pipe()
        self._out = _memory_file("vxlan-out")
        self._err = _memory_file("vxlan-err")
        try:
            with open(read_end, "rb", buffering=0) as stdin:  # the child has its own copy
                self._process = command("-batch", "-", **_sh_args(stdin, self._out, self._err))
            self._ended = os.pidfd_open(self._process.pid)  # readable once it has exited
        except BaseException:
            os.close(self._stdin)
            self._out.close()
            self._err.close()
            raise
        gevent.os.make_nonblocking(self._stdin)

    def finish(self, script):
        """Writes the lines, closes its input, waits for its end; (code, stdout,
        stderr). BrokenPipeError if it ended before reading them."""
        try:
            while script:
                script = script[gevent.os.nb_write(self._stdin, script):]
        finally:  # also when it ended before reading: BrokenPipeError
            os.close(self._stdin)
        gevent.socket.wait_read(self._ended)  # it exits at the end of its input
        try:
            ended = os.waitid(os.P_PIDFD, self._ended, os.WEXITED | os.WNOWAIT)
            code = ended.si_status if ended.si_code == os.CLD_EXITED else -ended.si_status
        except ChildProcessError:  # sh's output thread (it polls each second) reaped it
            code = _exit_code(self._process)  # kept by sh: no wait
        return code, _read(self._out), _read(self._err)

    def kill(self):
        _kill(self._process)

    def reap(self):
        """Waits for it through sh (it has ended, or was killed) and frees its files."""
        try:
            _exit_code(self._process)
        finally:
            os.close(self._ended)
            self._out.close()
            self._err.close()


def _found(tool):
    return shutil.which(tool) or tool


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
    return f"failed (killed by signal {-code})" if code < 0 else f"failed (exit {code})"
