"""The helper process that starts the plugin's `ip` and `bridge` processes,
through sh; runner.py asks it for each one and logs them.

sh starts a process by forking the process that asks. The plugin is a 45 MiB
Python process: each fork of it costs milliseconds of CPU, and leaves its pages
write-protected, so that its next request pays hundreds of page faults (0.3-0.5
ms on a no-op RPC; benchmarks/RESULTS.md). This helper imports only sh and the
standard library: its forks are cheap, and the plugin never forks again.

Messages on a SOCK_SEQPACKET socket, the helper's standard input, one JSON
object each:
  plugin -> helper  {"id": N, "argv": [TOOL, ARG...]} with three descriptors:
                    the child's standard input, output and error
  helper -> plugin  {"id": N, "pid": PID} with a pidfd of the child (none if
                    it has ended already), or
                    {"id": N, "error": WHY}: nothing started;
                    then {"id": N, "exit": CODE} once it has ended and been
                    reaped (CODE is -SIGNAL for a process killed by one)
The helper exits when the plugin's end of the socket closes (the plugin ended).
"""

import array
import json
import os
import socket
import sys
import threading

import sh

MAX_MESSAGE = 65536  # bytes of one message: an argv of ip's is far shorter
ANY_EXIT = list(range(256))  # sh returns any exit code rather than raising


def main():
    channel = socket.socket(fileno=sys.stdin.fileno())
    channel.setblocking(True)  # the plugin's end is non-blocking, and so was ours
    sending = threading.Lock()
    tools = {}

    def send(message, fds=()):
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        with sending:
            channel.sendmsg([json.dumps(message).encode()], ancillary)

    while True:
        data, fds = receive(channel)
        if not data:
            return 0
        # each in a thread of its own: sh blocks for milliseconds while it starts
        # one, and the plugin may ask for several at once (parallel Joins)
        threading.Thread(target=start, args=(json.loads(data), fds, tools, send),
                         daemon=True).start()


def receive(channel):
    """(message, descriptors); (b"", []) at the end of the plugin's input."""
    fds = array.array("i")
    data, ancillary, _, _ = channel.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def start(request, fds, tools, send):
    """Starts REQUEST's argv with FDS as its standard input, output and error;
    answers its pid and pidfd, and its exit code once it has ended."""
    number, argv = request["id"], request["argv"]
    stdin, stdout, stderr = (os.fdopen(fd, mode, buffering=0, closefd=False)
                             for fd, mode in zip(fds, ("rb", "wb", "wb")))
    try:
        command = tools.get(argv[0]) or tools.setdefault(argv[0], sh.Command(argv[0]))
        process = command(*argv[1:], _bg=True, _bg_exc=False, _in=stdin, _out=stdout,
                          _err=stderr, _ok_code=ANY_EXIT)
    except Exception as error:  # e.g. the tool is not on PATH: nothing ran
        send({"id": number, "error": str(error)})
        return
    finally:
        for fd in fds:  # the child has its own copies
            os.close(fd)
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:  # it has ended, and sh has reaped it: nothing to kill
        send({"id": number, "pid": process.pid})
    else:
        try:
            send({"id": number, "pid": process.pid}, [pidfd])
        finally:
            os.close(pidfd)
    threading.Thread(target=report_exit, args=(number, process, send), daemon=True).start()


def report_exit(number, process, send):
    """Tells the plugin the exit code as soon as the process has exited: the
    kernel's word, read without reaping it, since sh's wait, which reaps, first
    joins sh's threads. sh's output thread, which polls each second, may have
    reaped it already: then sh tells."""
    try:
        ended = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        ended = None
    if ended is not None:
        send({"id": number, "exit": ended.si_status if ended.si_code == os.CLD_EXITED
              else -ended.si_status})
    try:
        process.wait()
        code = process.exit_code
    except sh.SignalException as error:
        code = error.exit_code
    if ended is None:
        send({"id": number, "exit": code})


if __name__ == "__main__":
    sys.exit(main())
