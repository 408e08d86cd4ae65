"""What the swarm manager's plugin has allocated: the VNI and UDP port of each
swarm network, so that no second network takes them.

In swarm mode the manager calls AllocateNetwork once for a new network, before
any node creates it, and FreeNetwork when it is removed; two networks with one
VNI and port would be one VXLAN segment, their containers reachable across
them. The records are kept in the state directory, so they survive a restart
of the plugin. They are this manager's: a manager that takes over the swarm's
leadership knows only what its own plugin allocated.

A record is a cache of Docker's networks: one that stands in the way is
dropped only once Docker confirms that its network is gone (a FreeNetwork that
never came, say while the plugin was down).
"""

import logging

from gevent.lock import RLock

from .errors import OptionError

log = logging.getLogger("vxlan.allocations")
KIND = "allocations"  # the state directory's folder


class Allocations:
    def __init__(self, state, docker):
        self.state = state
        self.docker = docker
        self._lock = RLock()
        self._by_network = {}  # network ID -> (VNI, port)
        for network_id, record in state.load_all(KIND).records.items():
            try:
                self._by_network[network_id] = (int(record["VxlanId"]), int(record["Port"]))
            except (KeyError, TypeError, ValueError) as error:
                log.error("ignoring allocation %s in the state: %s", network_id[:12], error)

    def claim(self, network_id, options):
        """Records that NETWORK_ID has OPTIONS' VNI and port, or raises
        OptionError if another network of this swarm has them."""
        wanted = (options.get("VxlanId"), options.get("Port"))
        with self._lock:
            for other, taken in list(self._by_network.items()):
                if other != network_id and taken == wanted:
                    if self.docker.has_network(other):
                        raise OptionError(
                            f"option VxlanId={wanted[0]}: already used by swarm network "
                            f"{other} (with Port={wanted[1]})")
                    log.info("dropping the allocation of network %s: Docker no longer "
                             "has it", other)
                    self.release(other)
            self.state.save(KIND, network_id, {"VxlanId": wanted[0], "Port": wanted[1]})
            self._by_network[network_id] = wanted

    def release(self, network_id):
        with self._lock:
            self.state.delete(KIND, network_id)
            self._by_network.pop(network_id, None)
