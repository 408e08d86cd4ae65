"""Socket activation: which LISTEN_* variables make the plugin take systemd's
socket instead of binding its own; how a request's headers are read and an
answer is sent."""

import io

import gevent
import gevent.socket
import pytest
from gevent.pywsgi import WSGIServer

from vxlan.server import RequestHeaders, UnixSocketHandler, bind_unix_socket, sockets_passed

PID = 4242


@pytest.mark.parametrize("environ, count", [
    ({}, 0),                                                     # started by hand
    ({"LISTEN_PID": str(PID), "LISTEN_FDS": "1"}, 1),            # systemd's socket
    ({"LISTEN_PID": str(PID), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "vxlan.sock"}, 1),
    ({"LISTEN_PID": str(PID), "LISTEN_FDS": "0"}, 0),
    ({"LISTEN_PID": "1234", "LISTEN_FDS": "1"}, 0),              # meant for a parent
    ({"LISTEN_FDS": "1"}, 0),                                    # no LISTEN_PID: not ours
])
def test_sockets_passed(environ, count):
    assert sockets_passed(environ, PID) == count


@pytest.mark.parametrize("value", ["", "one", "-1"])
def test_a_malformed_count_for_this_process_is_refused(value):
    with pytest.raises(SystemExit, match=f"LISTEN_FDS={value!r}.*expected a number"):
        sockets_passed({"LISTEN_PID": str(PID), "LISTEN_FDS": value}, PID)


def test_request_headers_as_pywsgi_reads_them():
    lines = (b"Host: plugin\r\nCONTENT-length: 2\r\nX-Folded: one\r\n two\r\n"
             b"Content-Length: 9\r\n\r\n{}")
    headers = RequestHeaders(io.BufferedReader(io.BytesIO(lines)))
    assert headers.status == ""
    assert headers.get("content-length") == headers.getheader("Content-Length") == "2"
    assert headers.headers[2:4] == ["X-Folded: one\r\n", " two\r\n"]  # pywsgi joins these
    assert headers.typeheader is None and headers.get("nothing", "-") == "-"
    del headers["content-length"]  # as pywsgi does for a chunked body
    assert headers.get("Content-Length") is None


class CountedSends:
    """A socket that counts the sends of an answer."""

    def __init__(self, sock, sends):
        self._sock, self._sends = sock, sends

    def sendall(self, data):
        self._sends.append(bytes(data))
        return self._sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_an_answer_is_sent_in_one_piece(tmp_path):
    """The head and the body of an answer leave in one send: the client is
    woken once per answer, not once for the head and again for the body."""
    sends = []

    class Handler(UnixSocketHandler):
        def __init__(self, sock, *args):
            super().__init__(CountedSends(sock, sends), *args)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"Implements": ["NetworkDriver"]}']

    path = str(tmp_path / "s.sock")
    server = WSGIServer(bind_unix_socket(path), app, handler_class=Handler, log=None)
    server.start()
    try:
        with gevent.socket.socket(gevent.socket.AF_UNIX, gevent.socket.SOCK_STREAM) as client:
            client.connect(path)
            client.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            with gevent.Timeout(5):
                while not sends:
                    gevent.sleep(0.01)
    finally:
        server.stop()
    assert len(sends) == 1 and sends[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert sends[0].endswith(b'\r\n\r\n{"Implements": ["NetworkDriver"]}')
