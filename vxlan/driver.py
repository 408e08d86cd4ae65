"""Networks and endpoints: what to create on the host, and when to delete it.

A Docker network of this driver is one vxlan link on each host that has a
container on it; each container gets a macvlan (bridge mode) on that vxlan.

    CreateNetwork   validate and remember the options; nothing on the host yet
    CreateEndpoint  choose the container's MAC; remember the endpoint and its addresses
    Join            first container here: create the vxlan; then its macvlan; with
                    --probe-duplicates, refuse an address another host answers for
                    (probe.py); after the answer, announce the addresses (announce.py)
    Leave           nothing: Docker moves the macvlan back to the host itself
    DeleteEndpoint  forget the endpoint and answer; then delete the macvlan; last
                    endpoint here: delete the vxlan --vxlan-linger seconds later, in
                    the background (with the macvlan with 0)
    DeleteNetwork   delete the vxlan if it is still there; forget the network

A Join while the vxlan lingers keeps it. The plugin deletes only links it created
or adopted (commands.mark_owned marks them), and, at DeleteNetwork of a network
it has no record of, the Go original's unmarked vxlan named after it. It keeps
the options in state.py because Join does not carry them. A request writes the state before it changes
the host, so a state directory that cannot be written fails it with nothing done.
Those records are a cache of what Docker knows: a network missing from them is
asked of Docker, and a vxlan is never deleted because of an absence in them
alone (see recovery.py).
"""

import contextvars
import hashlib
import ipaddress
import logging
from collections import defaultdict, deque
from dataclasses import dataclass, replace

import gevent
from gevent.event import Event
from gevent.lock import RLock

from . import commands as cmd
from . import underlay
from .allocations import Allocations
from .auditlog import request_context
from .errors import CommandError, OptionError, PluginError
from .options import default_link_name, parse_options

log = logging.getLogger("vxlan.driver")
VXLAN_OVERHEAD = {4: 50, 6: 70}  # outer IP + UDP + VXLAN + inner Ethernet headers
VXLAN_LINGER = 60.0  # seconds a vxlan outlives its network's last container here
AFTER_DELETE_ENDPOINT = "after DeleteEndpoint's answer"  # the cause of its deletions
# Deletions that follow DeleteEndpoint's answer, running at once. Nothing holds
# Docker back while they run, and the kernel does them one at a time (rtnl):
# more would only add processes waiting for that lock.
DELETIONS_AT_ONCE = 4


@dataclass(frozen=True)
class Network:
    id: str
    options: object  # options.NetworkOptions
    gateway: str = None
    gateway6: str = None
    internal: bool = False

    @property
    def link(self):
        return self.options.link_name(self.id)

    def record(self):
        return {"id": self.id, "options": self.options.raw, "gateway": self.gateway,
                "gateway6": self.gateway6, "internal": self.internal}


@dataclass(frozen=True)
class Endpoint:
    id: str
    network_id: str
    mac: str
    addresses: tuple = ()  # its IPv4 and IPv6 addresses, without prefix length

    @property
    def link(self):
        return "macvlan_" + self.id[:7]  # the Go original's name, so hosts can move over

    def record(self):
        return {"id": self.id, "network": self.network_id, "mac": self.mac,
                "addresses": list(self.addresses)}


class Driver:
    def __init__(self, ip, docker, state, scope="local", vtepdev=None,
                 vxlan_linger=VXLAN_LINGER, announcer=None, prober=None):
        self.ip = ip
        self.docker = docker
        self.state = state
        self.scope = scope
        self.vtepdev = vtepdev
        self.announcer = announcer  # announce.Announcer, or None (--no-announce)
        self.prober = prober  # probe.DuplicateProbe, or None (the default)
        self.vxlan_linger = vxlan_linger
        self.networks = {}
        self.endpoints = {}
        self.vxlans_here = set()  # IDs of networks whose vxlan exists on this host
        self.idle_vxlans = {}  # network ID -> the greenlet that will delete its unused vxlan
        # network ID -> why its records cannot be used: its requests are refused
        # with that message, and its links left alone
        self.held = {}
        # networks whose endpoint records may be incomplete: their vxlan stays,
        # even after what looks like its last endpoint, until Docker confirms
        self.unconfirmed = set()
        self.network_locks = defaultdict(RLock)
        self._create_lock = RLock()  # conflict checks between networks
        # (request context, endpoint, Event) whose links go after DeleteEndpoint's
        # answer, and how many greenlets delete them (a few: see DELETIONS_AT_ONCE)
        self._deletions = deque()
        self._deleters = 0
        # network ID -> the Events of its macvlans still to be deleted. Deleting a
        # vxlan deletes the macvlans on it: it goes after them, as DeleteNetwork does.
        self._macvlans_going = defaultdict(list)
        self.allocations = Allocations(state, docker)  # swarm networks' VNIs, on a manager

    # --- RPCs -------------------------------------------------------------------

    def capabilities(self):
        return {"Scope": self.scope, "ConnectivityScope": self.scope}

    def create_network(self, network_id, options, ipv4_data, ipv6_data):
        generic = (options or {}).get("com.docker.network.generic") or {}
        net_options = parse_options(generic, self.vtepdev)
        gateways = _gateways((ipv4_data or []) + (ipv6_data or []))
        network = Network(network_id, net_options, gateways.get(4), gateways.get(6),
                          bool((options or {}).get("com.docker.network.internal")))
        with self._create_lock:
            check_host(network, self.ip, self.networks.values())
            self._remember_network(network)

    def allocate_network(self, network_id, options):
        # Swarm's manager: the Options we return replace the network's driver
        # options on every node, so validate them and hand them back unchanged;
        # and no two swarm networks get one VNI and port.
        self.allocations.claim(network_id, parse_options(options or {}, self.vtepdev))
        # the plugin never sees a service's endpoint mode: say it once per network
        log.warning("swarm network %s: give its services --endpoint-mode dnsrr (a virtual "
                    "IP needs a load balancer that only Docker's overlay driver has)",
                    network_id)
        return {"Options": options or {}}

    def free_network(self, network_id):
        self.allocations.release(network_id)

    def delete_network(self, network_id):
        self._refuse_if_held(network_id)
        for deleted in list(self._macvlans_going.get(network_id, ())):
            deleted.wait()
        with self.network_locks[network_id]:
            for endpoint in self.endpoints_of(network_id):
                self.forget_endpoint(endpoint.id)
            self.state.delete("networks", network_id)
            network = self.networks.pop(network_id, None)
            self._keep_vxlan(network_id)
            if network is None:
                links = self._vxlans_without_record(network_id)
            else:
                links = [network.link] if network_id in self.vxlans_here else []
            if links:
                self.delete_links([cmd.link_delete(link) for link in links])
            self.vxlans_here.discard(network_id)
        self.network_locks.pop(network_id, None)

    def _vxlans_without_record(self, network_id):
        """The vxlans of a network Docker removes and we have no record of: the
        Go original's (it kept none; its name is the network's) and ours whose
        record was lost. Docker removes a network only when nothing uses it."""
        return [link["ifname"] for link in self.ip.links("vxlan")
                if cmd.owner_of(link) == network_id or has_go_original_name(link, network_id)]

    def create_endpoint(self, network_id, endpoint_id, interface):
        self._network(network_id)
        mac = interface.get("MacAddress") or ""
        addresses = _addresses(interface)
        endpoint = Endpoint(endpoint_id, network_id, mac or _choose_mac(endpoint_id, addresses),
                            addresses)
        self.state.save("endpoints", endpoint_id, endpoint.record())
        self.endpoints[endpoint_id] = endpoint
        # Docker only accepts what it left empty: answer the MAC only if we chose it.
        return {} if mac else {"Interface": {"MacAddress": endpoint.mac}}

    def endpoint_info(self, network_id, endpoint_id):
        endpoint = self._endpoint(endpoint_id)
        network = self._network(network_id)
        return {"Value": {"vxlan": network.link, "macvlan": endpoint.link, "mac": endpoint.mac}}

    def join(self, network_id, endpoint_id):
        network = self._network(network_id)
        endpoint = self._endpoint(endpoint_id)
        with self.network_locks[network_id]:
            self._keep_vxlan(network_id)
            self._create_links(network, endpoint)
        if self.prober and self.scope == "local" and endpoint.addresses:
            self._refuse_duplicates(network, endpoint)
        if self.announcer and endpoint.addresses:
            # in the background, once this answer is out: never on docker run's path
            self.announcer.announce(network.link, endpoint.mac, endpoint.addresses,
                                    lambda: self.endpoints.get(endpoint_id) is endpoint)
        answer = {"InterfaceName": {"SrcName": endpoint.link, "DstPrefix": "eth"}}
        if network.gateway and not network.internal:
            answer["Gateway"] = network.gateway
        if network.gateway6 and not network.internal:
            answer["GatewayIPv6"] = network.gateway6
        return answer

    def delete_endpoint(self, network_id, endpoint_id):
        """DeleteEndpoint: forgets the endpoint, and deletes its links right after
        the answer: the kernel takes 15-20 ms to free a link, which `docker rm`
        need not wait for. A request for the network that comes meanwhile waits
        for a deletion of the vxlan (the network's lock); a crash before the
        deletion leaves a macvlan in the host's namespace that reconciling at
        the next start deletes (recovery.py). Returns an Event set once they
        are deleted."""
        endpoint, deleted = self._forget_endpoint_of(network_id, endpoint_id)
        # queued, not a greenlet each: a thousand waiting greenlets cost megabytes
        self._deletions.append((request_context.get(), endpoint, deleted))
        if self._deleters < DELETIONS_AT_ONCE:
            self._deleters += 1
            gevent.spawn(contextvars.Context().run, self._delete_links_after_answer)
        return deleted

    def remove_endpoint(self, network_id, endpoint_id):
        """Forgets the endpoint and deletes its links at once (recovery, a
        refused Join)."""
        self._delete_endpoint_links(*self._forget_endpoint_of(network_id, endpoint_id))

    def _forget_endpoint_of(self, network_id, endpoint_id):
        """(the endpoint, an Event set once its macvlan is deleted)."""
        endpoint = self.endpoints.get(endpoint_id) or Endpoint(endpoint_id, network_id, "")
        deleted = Event()
        with self.network_locks[network_id]:
            self.forget_endpoint(endpoint_id)
            self._macvlans_going[network_id].append(deleted)
        return endpoint, deleted

    def _delete_links_after_answer(self):
        try:
            while self._deletions:
                context, endpoint, deleted = self._deletions.popleft()
                request_context.set(context)  # the log names the request; CAUSE says when
                try:
                    self._delete_endpoint_links(endpoint, deleted, AFTER_DELETE_ENDPOINT)
                except PluginError as error:  # logged by the runner; `status` shows the link
                    log.error("could not delete the links of endpoint %s: %s",
                              endpoint.id[:12], error)
                except Exception:  # a bug: the deletions queued behind it still run
                    log.exception("deleting the links of endpoint %s failed unexpectedly",
                                  endpoint.id[:12])
        finally:
            self._deleters -= 1

    def _delete_endpoint_links(self, endpoint, deleted, cause=None):
        """The macvlan; the vxlan after the network's last macvlan here, at once
        (--vxlan-linger 0: in the same batch when no other macvlan of the network
        is still being deleted) or later. Sets DELETED when the macvlan is gone."""
        network_id = endpoint.network_id
        with self.network_locks[network_id]:
            if (not self.vxlan_linger and self._macvlans_going[network_id] == [deleted]
                    and self._vxlan_idle(network_id)):
                try:
                    self.delete_links([cmd.link_delete(endpoint.link),
                                       cmd.link_delete(self.networks[network_id].link)], cause)
                    self.vxlans_here.discard(network_id)
                finally:
                    self._macvlan_gone(network_id, deleted)
                return
        # The macvlan alone concerns no other request: a Join on the network need
        # not wait the 15-20 ms the kernel takes to free it.
        try:
            self.delete_links([cmd.link_delete(endpoint.link)], cause)
        finally:
            with self.network_locks[network_id]:
                self._macvlan_gone(network_id, deleted)
                if not self._macvlans_going.get(network_id) and self._vxlan_idle(network_id):
                    self.vxlan_unused(network_id)

    def _macvlan_gone(self, network_id, deleted):
        going = self._macvlans_going[network_id]
        going.remove(deleted)
        if not going:
            del self._macvlans_going[network_id]
        deleted.set()

    def _vxlan_idle(self, network_id):
        """Whether the network's vxlan is here and no endpoint here uses it (a
        network whose endpoint records may be incomplete keeps its vxlan until
        Docker confirms: recovery.py)."""
        return (network_id in self.networks and network_id in self.vxlans_here
                and not self.endpoints_of(network_id) and network_id not in self.unconfirmed)

    # --- the vxlan's life after its last container ---------------------------

    def vxlan_unused(self, network_id):
        """No endpoint here uses the network's vxlan any more: deletes it in
        --vxlan-linger seconds, in the background, unless a container joins
        first (at once with 0). Called with the network's lock held."""
        self._keep_vxlan(network_id)
        if self.vxlan_linger:
            self.idle_vxlans[network_id] = gevent.spawn_later(
                self.vxlan_linger, self._delete_idle_vxlan, network_id)
        else:
            self._delete_vxlan(network_id, "its network has no container on this host")

    def _keep_vxlan(self, network_id):
        """Cancels a pending deletion (Join, DeleteNetwork). A deletion already
        running holds the network's lock: the caller has waited for its end."""
        timer = self.idle_vxlans.pop(network_id, None)
        if timer is not None:
            timer.kill(block=False)

    def _delete_idle_vxlan(self, network_id):
        request_context.set({"network": network_id})  # no request: the log names the network
        with self.network_locks[network_id]:
            if self.idle_vxlans.get(network_id) is not gevent.getcurrent():
                return  # cancelled while it waited for the lock
            del self.idle_vxlans[network_id]
            if self.endpoints_of(network_id):
                return
            try:
                self._delete_vxlan(network_id, f"its network has had no container on this host "
                                               f"for {self.vxlan_linger:g} s (--vxlan-linger)")
            except PluginError as error:  # the vxlan stays; DeleteNetwork deletes it
                log.error("could not delete the unused vxlan of network %s: %s",
                          network_id[:12], error)

    def _delete_vxlan(self, network_id, cause):
        network = self.networks.get(network_id)
        if network is not None and network_id in self.vxlans_here:
            self.delete_links([cmd.link_delete(network.link)], cause)
            self.vxlans_here.discard(network_id)

    # --- what runs --------------------------------------------------------------

    def _create_links(self, network, endpoint):
        """Creates the endpoint's macvlan, and the network's vxlan if it is missing."""
        for attempt in (1, 2):
            new_vxlan = network.id not in self.vxlans_here
            commands = join_commands(network, endpoint, new_vxlan)
            try:
                self.ip.batch(commands)
            except CommandError as error:
                self._undo(error.done)
                if (attempt == 1 and not new_vxlan and "Cannot find device" in error.stderr):
                    # someone deleted our vxlan behind our back: create it again
                    self.vxlans_here.discard(network.id)
                    continue
                if attempt == 1 and new_vxlan and "File exists" in error.stderr and not error.done:
                    self._adopt_existing_vxlan(network)
                    continue
                if network.options.get("Group") and "No buffer space" in error.stderr:
                    raise PluginError(
                        f"{error}: this host has joined as many multicast groups as "
                        "net.ipv4.igmp_max_memberships allows (20 by default); raise it, "
                        "or let networks share a Group") from None
                raise
            if new_vxlan:
                self.vxlans_here.add(network.id)
            return

    def _refuse_duplicates(self, network, endpoint):
        """Fails the Join, and deletes its links, if another host answers for
        the endpoint's addresses (in local scope each host's IPAM hands out
        addresses on its own)."""
        holders = self.prober.holders(network.link, endpoint.addresses)
        if not holders:
            return
        address, mac = next(iter(holders.items()))
        vtep = next((entry["dst"] for entry in self.ip.fdb(network.link)
                     if entry.get("mac") == mac and "dst" in entry), None)
        self.remove_endpoint(network.id, endpoint.id)
        behind = f"behind VTEP {vtep}" if vtep else "behind a VTEP the vxlan did not learn"
        raise PluginError(f"address {address} is already in use on this VXLAN: {mac} answered "
                          f"for it, {behind}; give the hosts disjoint --ip-range slices, or "
                          "remove the other container")

    def _adopt_existing_vxlan(self, network):
        """The vxlan's name is taken: adopt the link if it is this network's (ours
        from before a crash, or the Go original's); refuse anything else."""
        link = self.ip.link(network.link)
        if link is None:
            raise PluginError(f"cannot create vxlan {network.link}: the kernel already has a "
                              f"vxlan with VNI {network.options.get('VxlanId')} on the same "
                              "port and device")
        if not is_network_link(link, network):
            port = cmd.data_of(link).get("port")
            if is_go_original_link(link, network, any_port=True):
                raise PluginError(
                    f"cannot create vxlan {network.link}: a vxlan of that name and VNI "
                    f"{network.options.get('VxlanId')} exists on UDP port {port} (the Go "
                    "original's default is the kernel's 8472), and this network has "
                    f"Port={network.options.get('Port')}: create the network with "
                    f"-o Port={port} to take it over, or remove the link")
            raise PluginError(f"cannot create vxlan {network.link}: a link of that name exists "
                              "and was not created by docker-vxlan-plugin; remove it or choose "
                              "another vxlanName")
        self.adopt(network, link)

    def adopt(self, network, link):
        """Takes LINK, found on the host, as NETWORK's vxlan: marks it (the Go
        original's carry no mark), keeps its UDP port in the record if the network
        named none (the original's links have the kernel's 8472), and adds the
        flood entries a crash between a first Join's `ip` and `bridge` steps may
        have left out."""
        name = link["ifname"]
        commands = []
        if cmd.owner_of(link) != network.id:
            log.info("adopting %s, made by the Go original for network %s", name,
                     network.id[:12])
            commands.append(cmd.mark_owned(name, network.id, up=True))
        port = cmd.data_of(link).get("port")
        if port and port != network.options.get("Port") and "Port" not in network.options.raw:
            log.info("network %s keeps the UDP port %s of its vxlan %s", network.id[:12], port,
                     name)
            network = replace(network, options=parse_options(
                {**network.options.raw, "Port": str(port)}, self.vtepdev))
            self._remember_network(network)
        if network.options.peers:
            present = cmd.flood_destinations(self.ip.fdb(name))
            commands += [cmd.fdb_append_flood(name, peer) for peer in remote_peers(network)
                         if peer not in present]
        if commands:
            self.ip.batch(commands)
        self.vxlans_here.add(network.id)

    def _undo(self, done):
        created = [argv for argv in done if argv[:3] == ["ip", "link", "add"]]
        for argv in reversed(created):
            try:
                self.ip.run(cmd.link_delete(argv[3]))
            except CommandError:
                pass  # logged by the runner; the original error is what the user needs

    def delete_links(self, commands, cause=None):
        """Deletes links; one that is already gone is not an error."""
        try:
            self.ip.batch(commands, cause)
        except CommandError as error:
            if "Cannot find device" not in error.stderr:
                raise
            rest = commands[len(error.done) + 1:]
            if rest:
                self.delete_links(rest, cause)

    # --- lookups ------------------------------------------------------------------

    def _network(self, network_id):
        self._refuse_if_held(network_id)
        network = self.networks.get(network_id)
        if network is None:
            network = self._network_from_docker(network_id)
        return network

    def _refuse_if_held(self, network_id):
        if network_id in self.held:
            raise PluginError(self.held[network_id])

    def _network_from_docker(self, network_id):
        """A network we have no record of (created on another host in global
        scope, or its record lost): ask Docker once."""
        with self.network_locks[network_id]:
            if network_id not in self.networks:
                found = self.docker.network(network_id)
                if found is None:
                    raise PluginError(f"Docker does not know network {network_id[:12]}")
                self.learn_from_docker(network_id, found)
                self._refuse_if_held(network_id)  # its options no longer validate
            return self.networks[network_id]

    def _remember_network(self, network):
        self.state.save("networks", network.id, network.record())
        self.networks[network.id] = network

    # --- what recovery.py needs -------------------------------------------------

    def restore_network(self, network_id, record):
        """A network from the state at start. One whose options no longer
        validate (say, Group after a restart without -vtepdev) is held; a record
        that makes no sense is left out, as if lost. Returns whether it was taken."""
        if not isinstance(record.get("options"), dict):
            log.error("ignoring network %s in the state: it has no options", network_id[:12])
            return False
        try:
            options = parse_options(record["options"], self.vtepdev)
        except OptionError as error:
            self.hold(network_id, f"network {network_id[:12]}: {error}")
            return False
        self.networks[network_id] = Network(network_id, options, record.get("gateway"),
                                            record.get("gateway6"),
                                            bool(record.get("internal")))
        return True

    def restore_endpoint(self, endpoint_id, record):
        """An endpoint from the state at start; returns whether it was taken."""
        try:
            self.endpoints[endpoint_id] = Endpoint(endpoint_id, record["network"],
                                                   record["mac"],
                                                   tuple(record.get("addresses", ())))
            return True
        except KeyError as error:
            log.error("ignoring endpoint %s in the state: no %s", endpoint_id[:12], error)
            return False

    def doubt_endpoint_records(self):
        """Some endpoint record could not be read: any network may have lost one."""
        self.unconfirmed.update(self.networks)

    def networks_to_confirm(self):
        """The networks recovery asks Docker about: all those from the state or
        the host, but the held ones."""
        return (set(self.networks) | self.unconfirmed
                | {e.network_id for e in self.endpoints.values()}) - set(self.held)

    def hold(self, network_id, reason):
        log.error("%s; its links are left alone", reason)
        self.held[network_id] = reason
        self.unconfirmed.discard(network_id)

    def found_vxlan(self, link):
        """A vxlan on the host at start: a known network's (ours, or the Go
        original's by name and VNI) is adopted; one marked as ours for a network
        we have no usable record of stays until Docker says what it is."""
        owner = cmd.owner_of(link)
        network = self.networks.get(owner) or next(
            (network for network in self.networks.values() if is_network_link(link, network)),
            None)
        if network is not None:
            self.adopt(network, link)
        elif owner is not None:
            self.vxlans_here.add(owner)
            if owner not in self.held:
                self.unconfirmed.add(owner)

    def learn_from_docker(self, network_id, found, endpoints_from_before=frozenset()):
        """Brings one network's records in line with Docker's: FOUND is Docker's
        DockerNetwork, or None if Docker does not know the network. A missing
        record is rebuilt from Docker's, with the endpoints Docker has here;
        endpoints from before this start that Docker no longer has are deleted.
        Returns the IDs of what was removed."""
        with self.network_locks[network_id]:
            if network_id in self.held:
                return []
            if found is None:
                return self._forget_network(network_id)
            if network_id not in self.networks and not self._rebuild_network(network_id, found):
                return []
            for endpoint_id, mac in found.endpoints.items():
                if endpoint_id not in self.endpoints:
                    endpoint = Endpoint(endpoint_id, network_id, mac)
                    self.state.save("endpoints", endpoint_id, endpoint.record())
                    self.endpoints[endpoint_id] = endpoint
            self.unconfirmed.discard(network_id)
            removed = []
            for endpoint in self.endpoints_of(network_id):
                if endpoint.id in endpoints_from_before and endpoint.id not in found.endpoints:
                    log.info("endpoint %s no longer exists in Docker: removing it",
                             endpoint.id[:12])
                    self.remove_endpoint(network_id, endpoint.id)
                    removed.append(endpoint.id)
            return removed

    def _rebuild_network(self, network_id, found):
        """Makes the network's record from Docker's; returns False (and holds the
        network) if its options do not validate."""
        try:
            options = parse_options(found.options, self.vtepdev)
        except OptionError as error:
            self.hold(network_id, f"network {network_id[:12]}: {error}")
            return False
        gateways = _gateways(found.ipam_config)
        network = Network(network_id, options, gateways.get(4), gateways.get(6), found.internal)
        log.info("network %s: record made from Docker's", network_id[:12])
        self._remember_network(network)
        link = self.ip.link(network.link)
        if link is not None and is_network_link(link, network):
            self.adopt(network, link)
        else:
            self.vxlans_here.discard(network_id)
        return True

    def _forget_network(self, network_id):
        if self.scope != "local":
            # a swarm node may not have a network (yet, or again): no proof it is gone
            if network_id in self.networks:
                self.unconfirmed.discard(network_id)
            return []
        log.info("network %s no longer exists in Docker: removing it", network_id[:12])
        self.unconfirmed.discard(network_id)
        self.delete_network(network_id)
        return [network_id]

    def remove_unused_links(self):
        """Deletes, once Docker has confirmed their networks, our vxlans that
        nobody uses (their network is gone, or has no endpoint here) and
        macvlans on them whose endpoint is gone (in the host's namespace, so in
        no container). Returns their names."""
        removed = []
        links = self.ip.links()
        ours = {link["ifname"]: cmd.owner_of(link) for link in links
                if cmd.kind_of(link) == "vxlan" and cmd.owner_of(link)}

        def confirmed(network_id):
            return network_id not in self.held and network_id not in self.unconfirmed

        for link in links:
            name, network_id = link["ifname"], ours.get(link.get("link"))
            if (cmd.kind_of(link) == "macvlan" and network_id and confirmed(network_id)
                    and name.startswith("macvlan_")
                    and not any(e.link == name for e in self.endpoints.values())):
                with self.network_locks[network_id]:
                    self.delete_links([cmd.link_delete(name)])
                removed.append(name)
        for name, network_id in ours.items():
            with self.network_locks[network_id]:
                if not confirmed(network_id) or (network_id in self.networks
                                                 and self.endpoints_of(network_id)):
                    continue
                if network_id in self.networks:
                    # a known network's: it lingers as after its last container
                    if network_id not in self.idle_vxlans:
                        self.vxlan_unused(network_id)
                        if not self.vxlan_linger:
                            removed.append(name)
                    continue
                self.delete_links([cmd.link_delete(name)])
                self.vxlans_here.discard(network_id)
            removed.append(name)
        return removed

    def _endpoint(self, endpoint_id):
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise PluginError(f"endpoint {endpoint_id[:12]} is unknown to the vxlan driver")
        return endpoint

    def endpoints_of(self, network_id):
        """The network's endpoints on this host (a list: callers may forget some)."""
        return [e for e in self.endpoints.values() if e.network_id == network_id]

    def forget_endpoint(self, endpoint_id):
        self.state.delete("endpoints", endpoint_id)
        self.endpoints.pop(endpoint_id, None)


def check_host(network, ip, known_networks):
    """Refuses a network that cannot work on this host, before anything is made.
    What it asks the kernel does not grow with the host's containers: the VTEP
    device's MTU, the link of the vxlan's name if there is one, and the vxlans."""
    options = network.options
    vtepdev = options.get("VtepDev")
    vtep_mtu = ip.mtu(vtepdev) if vtepdev else None
    if vtepdev and vtep_mtu is None:
        raise OptionError(f"option VtepDev={vtepdev}: no such device on this host")
    mtu = options.get("vxlanMTU")
    if mtu:
        underlay_mtu, what = ((vtep_mtu, vtepdev + "'s MTU") if vtepdev else
                              (underlay.path_mtu(options.peers), "the MTU of the route to Peers"))
        overhead = VXLAN_OVERHEAD[_underlay_family(options)]
        if underlay_mtu and mtu > underlay_mtu - overhead:
            raise OptionError(f"option vxlanMTU={mtu}: above {underlay_mtu - overhead}, the "
                              f"most that fits in {what} of {underlay_mtu} with the VXLAN "
                              f"overhead of {overhead} bytes")
    for other in known_networks:
        if other.id == network.id:
            continue
        if other.link == network.link:
            raise OptionError(f"option vxlanName={network.link}: already used by network "
                              f"{other.id[:12]}")
        if (other.options.get("VxlanId"), other.options.get("Port")) == (
                options.get("VxlanId"), options.get("Port")):
            raise OptionError(f"option VxlanId={options.get('VxlanId')}: already used by "
                              f"network {other.id[:12]} on this host")
    existing = ip.link(network.link)
    if existing and not is_network_link(existing, network):
        raise OptionError(f"a link named {network.link} already exists on this host and was "
                          "not created by docker-vxlan-plugin; choose another vxlanName")
    for link in ip.links("vxlan"):
        data = cmd.data_of(link)
        if (link["ifname"] != network.link and data.get("id") == options.get("VxlanId")
                and data.get("port") == options.get("Port")):
            raise OptionError(f"option VxlanId={options.get('VxlanId')}: the vxlan "
                              f"{link['ifname']} on this host already uses that VNI and port")


def is_network_link(link, network):
    """Whether LINK is NETWORK's vxlan: marked as ours for it, or the Go original's."""
    return cmd.owner_of(link) == network.id or is_go_original_link(link, network)


def has_go_original_name(link, network_id):
    """An unmarked link named as the Go original named the network's vxlan."""
    return cmd.owner_of(link) is None and link["ifname"] == default_link_name(network_id)


def is_go_original_link(link, network, any_port=False):
    """An unmarked vxlan with the Go original's name and the network's VNI, on
    the network's port or on any if the network named none (the original left
    it to the kernel: 8472)."""
    data = cmd.data_of(link)
    return (has_go_original_name(link, network.id)
            and data.get("id") == network.options.get("VxlanId")
            and (any_port or "Port" not in network.options.raw
                 or data.get("port") == network.options.get("Port")))


# --- the commands of each step: used by the driver and by `explain` ----------------

def join_commands(network, endpoint, new_vxlan):
    """Join: the endpoint's macvlan, after the network's vxlan if it is new here."""
    vxlan = vxlan_commands(network) if new_vxlan else []
    return vxlan + [cmd.macvlan_add(endpoint.link, network.link, endpoint.mac)]


def vxlan_commands(network):
    """The network's vxlan, up and marked as ours, with its flood entries."""
    options = network.options
    return ([cmd.vxlan_add(network.link, options.ip_args("link") + _derived_mtu(options),
                           options.ip_args("vxlan")),
             cmd.mark_owned(network.link, network.id, up=True)] +
            [cmd.fdb_append_flood(network.link, peer) for peer in remote_peers(network)])


def remote_peers(network):
    """The network's Peers but this host's own: one Peers list can serve every
    host, and a host does not flood to itself."""
    return underlay.remote(network.options.peers)


def explain(raw_options, vtepdev, ip, network_id, endpoints, announcer):
    """[(step, commands)] the plugin would run for such a network on this host;
    a command is an argv list, or the line of an announcement (announce.py).
    ENDPOINTS: (ID, IPv4 address or None) of the first and a further container."""
    network = Network(network_id, parse_options(raw_options, vtepdev))
    check_host(network, ip, [])
    first, second = (_example_endpoint(network_id, endpoint_id, address)
                     for endpoint_id, address in endpoints)
    return [
        ("docker network create: nothing runs; the options are checked and kept", []),
        ("first container on this host (Join)", join_commands(network, first, True)),
        ("each further container (Join)", join_commands(network, second, False)),
        ("after each Join's answer, in the background: frames the plugin sends itself, "
         "not a command (--no-announce: none)",
         [announcer.describe(network.link, second.mac, second.addresses)]),
        ("a container leaves (Leave): Docker moves its macvlan back; nothing runs", []),
        ("a container is removed (DeleteEndpoint): just after the answer",
         [cmd.link_delete(second.link)]),
        ("the last container here is removed (DeleteEndpoint): just after the answer",
         [cmd.link_delete(first.link)]),
        (f"no container here for --vxlan-linger seconds ({VXLAN_LINGER:g} by default; with 0, "
         "in the last DeleteEndpoint): in the background", [cmd.link_delete(network.link)]),
        ("docker network rm, if a vxlan is still here (DeleteNetwork)",
         [cmd.link_delete(network.link)]),
    ]


def _derived_mtu(options):
    """`mtu N` for a vxlan without a lower device: the kernel would give it
    1500 whatever the underlay, so take the smallest MTU of the routes to its
    Peers minus the overhead (nothing if vxlanMTU is given, or no route tells)."""
    if options.get("VtepDev") or options.get("vxlanMTU"):
        return []
    mtu = underlay.path_mtu(options.peers)
    return ["mtu", str(mtu - VXLAN_OVERHEAD[_underlay_family(options)])] if mtu else []


def _underlay_family(options):
    for name in ("Group", "SrcAddr"):
        if options.get(name):
            return ipaddress.ip_address(options.get(name)).version
    peers = options.peers
    return ipaddress.ip_address(peers[0]).version if peers else 4


def _gateways(entries):
    """{4: address, 6: address}: the first Gateway of each family among Docker's
    IPv4Data/IPv6Data or IPAM Config entries (api.py checked their types)."""
    gateways = {}
    for entry in entries:
        gateway = entry.get("Gateway")
        if gateway:
            try:
                address = ipaddress.ip_interface(gateway).ip
            except ValueError:
                raise PluginError(f"gateway {gateway!r} is not an IP address") from None
            gateways.setdefault(address.version, str(address))
    return gateways


def _example_endpoint(network_id, endpoint_id, address):
    addresses = _addresses({"Address": address} if address else {})
    return Endpoint(endpoint_id, network_id, _choose_mac(endpoint_id, addresses), addresses)


def _addresses(interface):
    """The endpoint's IPv4 and IPv6 addresses (Docker gives them with a prefix length)."""
    addresses = []
    for key in ("Address", "AddressIPv6"):
        if interface.get(key):
            try:
                addresses.append(str(ipaddress.ip_interface(interface[key]).ip))
            except ValueError:
                raise PluginError(f"endpoint address {interface[key]!r} is not an IP "
                                  "address") from None
    return tuple(addresses)


def _choose_mac(endpoint_id, addresses):
    """A stable MAC. From the IPv4 address as Docker's bridge does, so a container
    that comes back with its address comes back with its MAC. Without one (an
    IPv6-only network), from the IPv6 address, which a restarted container keeps
    too while its endpoint ID is new: a hash of the whole address, since its last
    four bytes alone can repeat within a /64. Else from the endpoint ID.
    ADDRESSES: the endpoint's, as _addresses gives them."""
    packed = {}
    for text in addresses:
        address = ipaddress.ip_address(text)
        packed.setdefault(address.version, address.packed)
    if 4 in packed:
        return "02:42:" + ":".join(f"{b:02x}" for b in packed[4])
    digest = hashlib.sha256(packed.get(6) or endpoint_id.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])
