"""The gevent server on the plugin's unix socket, and its life: start, serve,
stop cleanly on SIGTERM or SIGINT (requests in flight finish, within a bound),
remove the socket.

The socket is either the plugin's own (bound at start, removed at stop) or
handed over by systemd (socket activation: the listening socket is file
descriptor 3, LISTEN_PID names this process, LISTEN_FDS says how many). Then
systemd owns it: it existed before the plugin started and stays after it
stops, so dockerd's connections wait in its queue instead of failing.
"""

import logging
import os
import signal
import socket as stdlib_socket
import stat

import gevent
from gevent import socket
from gevent.event import Event
from gevent.pywsgi import WSGIHandler, WSGIServer

log = logging.getLogger("vxlan.server")
STOP_GRACE = 10.0  # seconds that requests in flight get to finish on SIGTERM
SD_LISTEN_FDS_START = 3  # the first file descriptor systemd passes
MAX_HEADER_LINE = 65536  # bytes, and
MAX_HEADERS = 100        # lines: the limits of Python's own http.client


class RequestHeaders:
    """A request's header lines, as pywsgi's handler reads them (its
    MessageClass). pywsgi's default parses them with the email package, which
    costs a tenth of a millisecond of a no-op RPC; Docker sends four headers."""

    status = ""  # why the headers are not acceptable ("": they are)

    def __init__(self, rfile):
        self.headers = []  # the lines as received, for the WSGI environment
        self._values = {}  # lower-case name -> value of its first line
        while True:
            line = rfile.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE:
                self.status = "header line too long"
                return
            if line in (b"\r\n", b"\n", b""):
                return
            if len(self.headers) == MAX_HEADERS:
                self.status = f"more than {MAX_HEADERS} header lines"
                return
            text = line.decode("latin-1")
            folded = text[:1] in " \t"  # continues the line before
            if (folded and not self.headers) or (not folded and ":" not in text):
                self.status = f"not a header line: {text.strip()[:80]!r}"
                return
            if not folded:
                name, _, value = text.partition(":")
                self._values.setdefault(name.strip().lower(), value.strip())
            self.headers.append(text)

    def get(self, name, default=None):
        return self._values.get(name.lower(), default)

    getheader = get

    def __delitem__(self, name):
        self._values.pop(name.lower(), None)

    @property
    def typeheader(self):
        return self.get("content-type")


class UnixSocketHandler(WSGIHandler):
    def MessageClass(self, rfile, _):
        return RequestHeaders(rfile)

    def get_environ(self):
        # pywsgi expects a (host, port) peer; a unix socket peer has none
        self.client_address = ("unix", 0)
        return super().get_environ()

    def _write_with_headers(self, data):
        # One send for the head and the body: pywsgi sends them apart, and the
        # client, woken by the head, must wait and wake again for the body.
        # (Private methods of pywsgi's, pinned in requirements.lock;
        # tests/unit/test_server.py counts the sends.)
        parts = []
        send = self._sendall
        self._sendall = parts.append
        try:
            super()._write_with_headers(data)
        finally:
            del self._sendall
        send(b"".join(parts))

    def log_request(self):
        pass  # no access log (log=None); pywsgi would format a line anyway


class RequestsInFlight:
    """The WSGI app, counting the requests being answered: a stop waits for
    those, not for idle keep-alive connections (Docker keeps one open)."""

    def __init__(self, app):
        self.app = app
        self.count = 0
        self.none = Event()
        self.none.set()

    def __call__(self, environ, start_response):
        self.count += 1
        self.none.clear()
        try:
            return self.app(environ, start_response)
        finally:
            self.count -= 1
            if not self.count:
                self.none.set()


def bind_unix_socket(path):
    """A listening unix socket at PATH that only root can use.

    A stale socket file (nobody listening) is replaced; a live one is not,
    so a second plugin cannot steal the first one's socket.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise SystemExit(f"{path} exists and is not a socket; refusing to replace it")
        probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        try:
            probe.connect(path)
            raise SystemExit(f"another process is serving on {path}; not starting")
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("replacing stale socket %s", path)
            os.unlink(path)
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is born rw------- (root only)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(128)
    return listener


def sockets_passed(environ, pid):
    """How many listening sockets systemd passed to process PID, from the
    environment ENVIRON (0: no socket activation). Variables meant for another
    process (a parent that was activated and did not unset them) are ignored."""
    if environ.get("LISTEN_PID") != str(pid):
        return 0
    text = environ.get("LISTEN_FDS", "")
    if not text.isdigit():
        raise SystemExit(f"LISTEN_FDS={text!r} (set by systemd for socket activation): "
                         "expected a number of file descriptors")
    return int(text)


def systemd_socket():
    """The listening unix socket systemd passed to this process, or None.
    The LISTEN_* variables are removed, so that no child takes them."""
    count = sockets_passed(os.environ, os.getpid())
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if count == 0:
        return None
    if count != 1:
        raise SystemExit(f"systemd passed {count} sockets (LISTEN_FDS={count}): expected one, "
                         "the .socket unit's ListenStream")
    problem = ""
    try:
        listener = socket.socket(fileno=SD_LISTEN_FDS_START)
        usable = (listener.family == socket.AF_UNIX and listener.type == socket.SOCK_STREAM
                  and listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError as error:
        usable, problem = False, f" ({error.strerror})"
    if not usable:
        raise SystemExit(f"file descriptor {SD_LISTEN_FDS_START}, passed by systemd, is not a "
                         f"listening unix stream socket{problem}: the .socket unit needs "
                         "ListenStream=/run/docker/plugins/NAME.sock")
    os.set_inheritable(SD_LISTEN_FDS_START, False)  # not for ip and bridge
    return listener


def serve(app, socket_path):
    """Serves APP on the socket systemd passed, else on SOCKET_PATH (bound
    here, and removed when the plugin stops)."""
    listener = systemd_socket()
    ours = listener is None
    if ours:
        listener = bind_unix_socket(socket_path)
    where = socket_path if ours else f"{listener.getsockname()} (from systemd)"
    in_flight = RequestsInFlight(app)
    server = WSGIServer(listener, in_flight, handler_class=UnixSocketHandler,
                        log=None, error_log=logging.getLogger("vxlan.http"))

    def stop(signum):
        log.info("got %s: finishing requests in flight (up to %g s)",
                 signal.Signals(signum).name, STOP_GRACE)
        # No new connections, and serve_forever returns. (gevent's stop(timeout)
        # would not wait: it waits only for a pool, and a pool holds idle
        # keep-alive connections too.)
        server.close()

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop, signum)
    log.info("serving the vxlan network driver on %s", where)
    try:
        server.serve_forever()
        if not in_flight.none.wait(STOP_GRACE):
            log.warning("%d requests still running after %g s: stopping anyway",
                        in_flight.count, STOP_GRACE)
    finally:
        if ours:
            try:
                os.unlink(socket_path)
            except FileNotFoundError:
                pass
            log.info("stopped; removed %s", socket_path)
        else:
            log.info("stopped; the socket stays with systemd")
