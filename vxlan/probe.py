"""Asking the VXLAN at Join whether another host already holds a container's
address (off by default: --probe-duplicates SECONDS).

In local scope each host's IPAM hands out addresses knowing nothing of the
other hosts, so two hosts can give one address to two containers. Before Join
answers, the plugin sends an ARP probe for each IPv4 address and a duplicate
address detection solicitation for each IPv6 address through the network's
vxlan, from the vxlan's own MAC (the container's may be the holder's too: it
is chosen from the address), and waits SECONDS for an answer. The new
container cannot answer yet, so any answer names a holder. This costs every
docker run that wait.

Each probe is one entry in the command log, in the Join's context.
"""

import ipaddress
import time

import gevent

from . import auditlog, rawsocket
from .packets import holder_of, probe

KINDS = {4: "ARP probe", 6: "DAD solicitation"}


class DuplicateProbe:
    def __init__(self, wait):
        self.wait = wait  # seconds

    def holders(self, device, addresses):
        """{address: MAC} of the hosts that answered for ADDRESSES on DEVICE."""
        found = {}
        with rawsocket.listening(device) as (sock, own_mac):
            kinds = ", ".join(KINDS[version] for version in
                              sorted({ipaddress.ip_address(a).version for a in addresses}))
            line = (f"probe {' '.join(addresses)} from {own_mac} on {device} "
                    f"({kinds}; waits {self.wait:g} s for an answer)")
            auditlog.started(line)
            started = time.monotonic()
            for address in addresses:
                rawsocket.send_on(sock, device, probe(own_mac, address))
            with gevent.Timeout(self.wait, False):  # False: the wait just ends
                while len(found) < len(addresses):
                    frame, (_, _, kind, _, _) = sock.recvfrom(2048)
                    holder = kind != rawsocket.PACKET_OUTGOING and holder_of(frame)
                    if holder and holder[0] in addresses:
                        found.setdefault(*holder)
        held = "; ".join(f"{address} is held by {mac}" for address, mac in found.items())
        auditlog.finished(line, None, "failed" if found else "ok",
                          time.monotonic() - started, held)
        return found
