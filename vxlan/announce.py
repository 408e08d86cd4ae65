"""Announcing a container's addresses on its network's VXLAN after Join, so that
every VTEP learns where the container's MAC lives now and every neighbour
replaces a stale ARP or ND entry: a container that moved to another host, or
came back with another MAC, is reached at once, even if it never sends.

The frames (packets.py) leave through the network's vxlan in the plugin's own
network namespace, with the container's MAC as their source, from an
AF_PACKET socket: no process, no need to enter the container. The vxlan floods
them like any broadcast (to its Group, or to every Peer); the remote VTEPs
learn the MAC from them, and the containers and routers behind those VTEPs
update their caches. Containers on this host do not get them (what the vxlan
itself sends does not reach the macvlans on it); they reach the container
through the macvlan bridge, by its MAC.

Each announcement is one entry in the command log: "run" before the first
send, and its result after the last.
"""

import contextvars
import ipaddress
import time

import gevent

from . import auditlog, rawsocket
from .packets import announcement

# Seconds after the Join answer. The first frames go while Docker is still
# moving the interface into the container: VTEPs and neighbours learn from them
# all the same (an answer to them would be lost). The later ones find the
# container up, and cover a lost frame.
DELAYS = (0.0, 0.5, 1.0)
CAUSE = "after Join: tell the VXLAN where the container's addresses are"
KINDS = {4: "gratuitous ARP", 6: "unsolicited NA"}


class Announcer:
    """Announces containers' addresses in the background, each a few times."""

    def __init__(self, delays=DELAYS):
        self.delays = delays

    def describe(self, device, mac, addresses):
        """The announcement's line in the command log (and in `explain`); it is
        not a shell command. No ADDRESSES: what it would be for any container."""
        versions = sorted({ipaddress.ip_address(a).version for a in addresses}) or [4, 6]
        what = " ".join(addresses) or "the container's addresses"
        kinds = ", ".join(KINDS[version] for version in versions)
        return (f"announce {what} from {mac} on {device} "
                f"({kinds}; {len(self.delays)} times in {self.delays[-1]:g} s)")

    def announce(self, device, mac, addresses, still_wanted):
        """Starts announcing ADDRESSES at MAC on DEVICE, and returns the greenlet.
        Before each round it asks still_wanted(): an endpoint that is gone must
        not draw traffic to this host. The log names the caller's network and
        endpoint, and CAUSE in place of the RPC: the request has been answered."""
        where = {key: value for key, value in auditlog.request_context.get().items()
                 if key in ("network", "endpoint")}
        return gevent.spawn(contextvars.Context().run, self._announce, where, device, mac,
                            addresses, still_wanted)

    def _announce(self, where, device, mac, addresses, still_wanted):
        auditlog.request_context.set(where)
        line = self.describe(device, mac, addresses)
        frames = [announcement(mac, address) for address in addresses]
        auditlog.started(line, cause=CAUSE)
        started = time.monotonic()
        status, error, note = "ok", "", None
        for sent, delay in enumerate(self.delays):
            gevent.sleep(max(0.0, started + delay - time.monotonic()))
            if not still_wanted():
                note = f"stopped after {sent} of {len(self.delays)}: the endpoint is gone"
                break
            try:
                rawsocket.send(device, frames)
            except OSError as failure:
                status, error = "failed", f"{failure.strerror or failure} (after {sent} sent)"
                break
        auditlog.finished(line, None, status, time.monotonic() - started, error, cause=CAUSE,
                          note=note)

