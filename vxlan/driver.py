"""Networks and endpoints: what to create on the host, and when to delete it.

A Docker network of this driver is one vxlan link on each host that has a
container on it; each container gets a macvlan (bridge mode) on that vxlan.

    CreateNetwork   validate and remember the options; nothing on the host yet
    CreateEndpoint  choose the container's MAC; remember the endpoint
    Join            first container here: create the vxlan; then its macvlan
    Leave           nothing: Docker moves the macvlan back to the host itself
    DeleteEndpoint  delete the macvlan; last endpoint here: delete the vxlan
                    --vxlan-linger seconds later, in the background (at once with 0)
    DeleteNetwork   delete the vxlan if it is still there; forget the network

A Join while the vxlan lingers keeps it. The plugin deletes only links it created
or adopted (commands.mark_owned marks them), and keeps the options in state.py
because Join does not carry them. A request writes the state before it changes
the host, so a state directory that cannot be written fails it with nothing done.
"""

import hashlib
import ipaddress
import logging
import socket
from collections import defaultdict
from dataclasses import dataclass

import gevent
from gevent.lock import RLock

from . import commands as cmd
from .auditlog import request_context
from .errors import CommandError, OptionError, PluginError
from .options import parse_options

log = logging.getLogger("vxlan.driver")
VXLAN_OVERHEAD = {4: 50, 6: 70}  # outer IP + UDP + VXLAN + inner Ethernet headers
VXLAN_LINGER = 60.0  # seconds a vxlan outlives its network's last container here


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

    @property
    def link(self):
        return "macvlan_" + self.id[:7]  # the Go original's name, so hosts can move over

    def record(self):
        return {"id": self.id, "network": self.network_id, "mac": self.mac}


class Driver:
    def __init__(self, ip, docker, state, scope="local", vtepdev=None,
                 vxlan_linger=VXLAN_LINGER):
        self.ip = ip
        self.docker = docker
        self.state = state
        self.scope = scope
        self.vtepdev = vtepdev
        self.vxlan_linger = vxlan_linger
        self.networks = {}
        self.endpoints = {}
        self.vxlans_here = set()  # IDs of networks whose vxlan exists on this host
        self.idle_vxlans = {}  # network ID -> the greenlet that will delete its unused vxlan
        self.network_locks = defaultdict(RLock)
        self._create_lock = RLock()  # conflict checks between networks

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
            self.state.save("networks", network_id, network.record())
            self.networks[network_id] = network

    def allocate_network(self, network_id, options):
        # Swarm's manager: the Options we return replace the network's driver
        # options on every node, so validate them and hand them back unchanged.
        parse_options(options or {}, self.vtepdev)
        return {"Options": options or {}}

    def delete_network(self, network_id):
        with self.network_locks[network_id]:
            for endpoint in self.endpoints_of(network_id):
                self.forget_endpoint(endpoint.id)
            self.state.delete("networks", network_id)
            network = self.networks.pop(network_id, None)
            self._keep_vxlan(network_id)
            if network and network_id in self.vxlans_here:
                self.delete_links([cmd.link_delete(network.link)])
                self.vxlans_here.discard(network_id)
        self.network_locks.pop(network_id, None)

    def create_endpoint(self, network_id, endpoint_id, interface):
        self._network(network_id)
        mac = interface.get("MacAddress") or ""
        endpoint = Endpoint(endpoint_id, network_id, mac or _choose_mac(endpoint_id, interface))
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
        answer = {"InterfaceName": {"SrcName": endpoint.link, "DstPrefix": "eth"}}
        if network.gateway and not network.internal:
            answer["Gateway"] = network.gateway
        if network.gateway6 and not network.internal:
            answer["GatewayIPv6"] = network.gateway6
        return answer

    def delete_endpoint(self, network_id, endpoint_id):
        endpoint = self.endpoints.get(endpoint_id) or Endpoint(endpoint_id, network_id, "")
        with self.network_locks[network_id]:
            self.forget_endpoint(endpoint_id)
            network = self.networks.get(network_id)
            last = (network is not None and network_id in self.vxlans_here
                    and not self.endpoints_of(network_id))
            now = last and not self.vxlan_linger
            self.delete_links(delete_endpoint_commands(network, endpoint, now))
            if now:
                self.vxlans_here.discard(network_id)
            elif last:
                self.vxlan_unused(network_id)

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

    def _adopt_existing_vxlan(self, network):
        """The vxlan's name is taken: adopt the link if it is this network's (ours
        from before a crash, or the Go original's); refuse anything else."""
        link = self.ip.link(network.link)
        if link is None:
            raise PluginError(f"cannot create vxlan {network.link}: the kernel already has a "
                              f"vxlan with VNI {network.options.get('VxlanId')} on the same "
                              "port and device")
        if not is_network_link(link, network):
            raise PluginError(f"cannot create vxlan {network.link}: a link of that name exists "
                              "and was not created by docker-vxlan-plugin; remove it or choose "
                              "another vxlanName")
        self.ip.run(cmd.mark_owned(network.link, network.id, up=True))
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
        network = self.networks.get(network_id)
        if network is None:
            network = self._network_from_docker(network_id)
        return network

    def _network_from_docker(self, network_id):
        """A network created on another host (global scope): ask Docker once."""
        with self.network_locks[network_id]:
            if network_id in self.networks:
                return self.networks[network_id]
            info = self.docker.network(network_id)
            gateways = _gateways((info.get("IPAM") or {}).get("Config") or [])
            network = Network(network_id, parse_options(info.get("Options") or {}, self.vtepdev),
                              gateways.get(4), gateways.get(6), bool(info.get("Internal")))
            self.state.save("networks", network_id, network.record())
            self.networks[network_id] = network
            return network

    def network_from_record(self, record):
        return Network(record["id"], parse_options(record["options"], self.vtepdev),
                       record.get("gateway"), record.get("gateway6"),
                       bool(record.get("internal")))

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
    if vtepdev and mtu:
        family = _underlay_family(options)
        limit = vtep_mtu - VXLAN_OVERHEAD[family]
        if mtu > limit:
            raise OptionError(f"option vxlanMTU={mtu}: above {limit}, the most that fits in "
                              f"{vtepdev}'s MTU of {vtep_mtu} with the VXLAN "
                              f"overhead of {VXLAN_OVERHEAD[family]} bytes")
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


def is_go_original_link(link, network):
    return (cmd.owner_of(link) is None and link["ifname"] == "vx_" + network.id[:12]
            and cmd.data_of(link).get("id") == network.options.get("VxlanId"))


# --- the commands of each step: used by the driver and by `explain` ----------------

def join_commands(network, endpoint, new_vxlan):
    """Join: the endpoint's macvlan, after the network's vxlan if it is new here."""
    options = network.options
    vxlan = []
    if new_vxlan:
        # One Peers list can serve every host: a host does not flood to itself.
        remote_peers = [peer for peer in options.peers if not is_local_address(peer)]
        vxlan = ([cmd.vxlan_add(network.link, options.ip_args("link"),
                                options.ip_args("vxlan")),
                  cmd.mark_owned(network.link, network.id, up=True)] +
                 [cmd.fdb_append_flood(network.link, peer) for peer in remote_peers])
    return vxlan + [cmd.macvlan_add(endpoint.link, network.link, endpoint.mac)]


def delete_endpoint_commands(network, endpoint, with_vxlan):
    """DeleteEndpoint: the macvlan, and the vxlan with the last endpoint here
    when it does not linger (--vxlan-linger 0)."""
    return [cmd.link_delete(endpoint.link)] + (
        [cmd.link_delete(network.link)] if with_vxlan else [])


def explain(raw_options, vtepdev, ip, network_id, endpoint_ids):
    """[(step, commands)] the plugin would run for such a network on this host."""
    network = Network(network_id, parse_options(raw_options, vtepdev))
    check_host(network, ip, [])
    first, second = (Endpoint(e, network_id, _choose_mac(e, {})) for e in endpoint_ids)
    return [
        ("docker network create: nothing runs; the options are checked and kept", []),
        ("first container on this host (Join)", join_commands(network, first, True)),
        ("each further container (Join)", join_commands(network, second, False)),
        ("a container leaves (Leave): Docker moves its macvlan back; nothing runs", []),
        ("a container is removed (DeleteEndpoint)",
         delete_endpoint_commands(network, second, False)),
        ("the last container here is removed (DeleteEndpoint)",
         delete_endpoint_commands(network, first, False)),
        ("no container here for --vxlan-linger seconds (60 by default; with 0, in the last "
         "DeleteEndpoint): in the background", [cmd.link_delete(network.link)]),
        ("docker network rm, if a vxlan is still here (DeleteNetwork)",
         [cmd.link_delete(network.link)]),
    ]


def is_local_address(address):
    """Whether ADDRESS belongs to this host (network namespace): only then can a
    socket bind to it. A syscall, not a process."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
            return True
        except OSError:
            return False


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


def _choose_mac(endpoint_id, interface):
    """A stable MAC: from the IPv4 address as Docker's bridge does, so a container
    that comes back with its address comes back with its MAC; else from the ID."""
    address = interface.get("Address")
    if address:
        try:
            packed = ipaddress.ip_interface(address).ip.packed
        except ValueError:
            raise PluginError(f"endpoint address {address!r} is not an IP address") from None
        if len(packed) == 4:
            return "02:42:" + ":".join(f"{b:02x}" for b in packed)
    digest = hashlib.sha256(endpoint_id.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])
