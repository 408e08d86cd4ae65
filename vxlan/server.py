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
from gevent.pywsgi import WSGIHandler, WSGIServer

log = logging.getLogger("vxlan.server")
STOP_GRACE = 10.0  # seconds that requests in flight get to finish on SIGTERM


class UnixSocketHandler(WSGIHandler):
    def get_environ(self):
        # pywsgi expects a (host, port) peer; a unix socket peer has none
        self.client_address = ("unix", 0)
        return super().get_environ()


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
    server = WSGIServer(listener, app, handler_class=UnixSocketHandler,
                        log=None, error_log=logging.getLogger("vxlan.http"))

    def stop(signum):
        log.info("got %s: finishing requests in flight (up to %g s)",
                 signal.Signals(signum).name, STOP_GRACE)
        gevent.spawn(server.stop, timeout=STOP_GRACE)

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop, signum)
    log.info("serving the vxlan network driver on %s", socket_path)
    try:
        server.serve_forever()
    finally:
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
        log.info("stopped; removed %s", socket_path)
