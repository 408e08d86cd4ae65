"""What this host's routing says about a VTEP address: whether the address is
the host's own, and the MTU of the path to it.

One UDP socket per question, connected and never used: connect() makes the
kernel route the address (nothing is sent), getsockname() then holds the
source it chose, and IP_MTU/IPV6_MTU the path's MTU. An address of this host
routes through the local table with itself as the source. Binding is no test
of that: with net.ipv4.ip_nonlocal_bind (keepalived and HAProxy hosts set it)
a socket binds any address. Syscalls only, no process.
"""

import ipaddress
import socket
from dataclasses import dataclass

# Linux's getsockopt names, which Python's socket module does not export
_PATH_MTU = {socket.AF_INET: (socket.IPPROTO_IP, 14),      # IP_MTU
             socket.AF_INET6: (socket.IPPROTO_IPV6, 24)}   # IPV6_MTU
_DISCARD_PORT = 9  # a port for connect() to name; nothing is ever sent to it


@dataclass(frozen=True)
class Route:
    local: bool  # the address is this host's own
    mtu: int     # of the path to it


def route_to(address):
    """The Route to ADDRESS, or None if this host has none."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, _DISCARD_PORT))
        except OSError:  # e.g. "Network is unreachable"
            return None
        source = ipaddress.ip_address(probe.getsockname()[0])
        return Route(source == ipaddress.ip_address(address), probe.getsockopt(*_PATH_MTU[family]))


def remote(addresses):
    """Those of ADDRESSES that are not this host's own, in their order."""
    routes = [(address, route_to(address)) for address in addresses]
    return [address for address, route in routes if not (route and route.local)]


def path_mtu(addresses):
    """The smallest MTU of the paths to those of ADDRESSES that are not this
    host's own, or None if there is no route to any of them."""
    routes = [route_to(address) for address in addresses]
    return min((route.mtu for route in routes if route and not route.local), default=None)
