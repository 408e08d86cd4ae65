"""The gevent server on the plugin's unix socket, and its life: start, serve,
stop cleanly on SIGTERM or SIGINT (requests in flight finish, within a bound),
remove the socket.
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


class UnixSocketHandler(WSGIHandler):
    def get_environ(self):
        # pywsgi expects a (host, port) peer; a unix socket peer has none
        self.client_address = ("unix", 0)
        return super().get_environ()


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


def serve(app, socket_path):
    listener = bind_unix_socket(socket_path)
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
    log.info("serving the vxlan network driver on %s", socket_path)
    try:
        server.serve_forever()
        if not in_flight.none.wait(STOP_GRACE):
            log.warning("%d requests still running after %g s: stopping anyway",
                        in_flight.count, STOP_GRACE)
    finally:
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
        log.info("stopped; removed %s", socket_path)
