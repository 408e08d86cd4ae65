"""The plugin's packet sockets (AF_PACKET): Ethernet frames sent as they are
out of a link of this host's network namespace, and the frames a link
receives. They need CAP_NET_RAW."""

import os
import socket
from contextlib import contextmanager

import gevent
import gevent.lock

from .errors import PluginError

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # what recvfrom says of a frame this host sent


# Closing a packet socket waits for an RCU grace period (synchronize_net: 8-16
# ms measured) with the calling thread, and so the plugin's event loop, stopped.
_sender = None  # the socket every send() uses, opened once and kept
# One greenlet at a time on it: a second one waiting for a full send buffer
# to drain would be refused by gevent (ConcurrentObjectUseError).
_sending = gevent.lock.Semaphore()


def send(device, frames):
    """Sends each Ethernet frame, as it is, out of DEVICE."""
    global _sender
    with _sending:
        if _sender is None:
            _sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # 0: receives nothing
        for frame in frames:
            send_on(_sender, device, frame)


def send_on(sock, device, frame):
    """Sends FRAME out of DEVICE on a packet socket, with its own EtherType."""
    sock.sendto(frame, (device, int.from_bytes(frame[12:14], "big")))


@contextmanager
def listening(device):
    """(socket, DEVICE's MAC as text): a socket that gets every frame DEVICE
    receives from now on, and can send out of it."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind((device, ETH_P_ALL))
        yield sock, ":".join(f"{b:02x}" for b in sock.getsockname()[4])
    finally:  # the close (see _sender) waits in a thread, not in the event loop
        gevent.get_hub().threadpool.spawn(os.close, sock.detach())


def check_can_send(flag):
    """Raises PluginError unless this process may open a packet socket (no
    CAP_NET_RAW: EPERM; a seccomp filter on address families, such as
    systemd's RestrictAddressFamilies: EAFNOSUPPORT); FLAG names what turns
    off the features that need it."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except OSError as error:
        raise PluginError(f"announcing and probing addresses need a packet socket (AF_PACKET, "
                          f"CAP_NET_RAW), and opening one failed: {error.strerror or error}; "
                          f"allow it, or start without them ({flag})") from None
