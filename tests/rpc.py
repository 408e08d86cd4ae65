"""A client for the plugin's socket, speaking the remote driver protocol as
Docker does (POST, JSON body, no Content-Type)."""

import http.client
import json
import secrets
import socket


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def call_raw(socket_path, method, body=b"", http_method="POST", timeout=30):
    """(HTTP status, decoded JSON answer) of one request."""
    connection = UnixConnection(socket_path, timeout)
    try:
        connection.putrequest(http_method, "/" + method)
        connection.putheader("Accept", "application/vnd.docker.plugins.v1.2+json")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def call(socket_path, method, body=None, timeout=30):
    data = b"" if body is None else json.dumps(body).encode()
    return call_raw(socket_path, method, data, timeout=timeout)


def new_id():
    """A network or endpoint ID as Docker makes them."""
    return secrets.token_hex(32)


def network_request(network_id, options, subnet="10.42.0.0/24", gateway="10.42.0.254/24"):
    """A CreateNetwork body as Docker sends it, OPTIONS being the `-o` options."""
    return {"NetworkID": network_id,
            "Options": {"com.docker.network.enable_ipv6": False,
                        "com.docker.network.generic": options},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": subnet, "Gateway": gateway}],
            "IPv6Data": []}


def endpoint_request(network_id, endpoint_id, address="10.42.0.2/24", mac=""):
    """A CreateEndpoint body as Docker sends it."""
    return {"NetworkID": network_id, "EndpointID": endpoint_id,
            "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": mac},
            "Options": {}}
