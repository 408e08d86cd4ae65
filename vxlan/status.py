"""`docker-vxlan-plugin status`: what the plugin has on this host now, who uses
it, and where the kernel differs from what the plugin's records and Docker say
should be there (drift), each difference with the command that would repair it.

It changes nothing. It reads the plugin's state directory, the kernel (`ip`,
`bridge`, and `ip` inside each container's network namespace) and Docker, so it
works whether the plugin runs or not; if Docker does not answer, that is
reported and the records are still held against the kernel.
"""

import concurrent.futures
import os
import shlex

import gevent

from . import commands as cmd
from .driver import Endpoint, Network, remote_peers, vxlan_commands
from .errors import DockerLookupError, OptionError
from .options import parse_options
from .state import StateStore

KINDS = ("networks", "endpoints")
NETNS_CHUNK = 50  # containers whose interfaces one shell lists (several shells run at once)
DOCKER_THREADS = 4  # `docker inspect`s at once: one per container adds up at 1000


def survey(state_dir, ip, docker, vtepdev=None):
    """The report (a dict, as `status --json` prints it)."""
    try:
        records, state = read_records(state_dir), state_dir
    except OSError as error:
        records, state = ({}, {}), f"{state_dir} (cannot be read: {error.strerror})"
    if not os.path.isdir(state_dir):
        state = f"{state_dir} (missing)"
    return {"state_dir": state, **Survey(ip, docker, vtepdev).run(*records)}


def read_records(state_dir):
    """({network ID: record}, {endpoint ID: record}) from the plugin's state
    directory, touching nothing there (the plugin may be writing)."""
    if not os.path.isdir(state_dir) or not set(KINDS) <= set(os.listdir(state_dir)):
        return {}, {}  # (StateStore would make the folders)
    store = StateStore(state_dir)
    return tuple(store.load_all(kind, tidy=False).records for kind in KINDS)


class Survey:
    def __init__(self, ip, docker, vtepdev):
        self.ip = ip
        self.docker = docker
        self.vtepdev = vtepdev
        self.docker_error = None
        self.drift = []

    def run(self, network_records, endpoint_records):
        links = self.ip.links()
        self.by_name = {link["ifname"]: link for link in links}
        marked = {cmd.owner_of(link): link for link in links
                  if cmd.kind_of(link) == "vxlan" and cmd.owner_of(link)}
        network_ids = list(network_records) + sorted(set(marked) - set(network_records))
        in_docker = {network_id: self._ask_docker(self.docker.network_if_known, network_id)
                     for network_id in network_ids}
        container_ids = sorted({container_id for network in in_docker.values()
                                for container_id in (network or {}).get("Containers") or {}})
        with concurrent.futures.ThreadPoolExecutor(DOCKER_THREADS) as pool:
            answers = pool.map(lambda container_id: self._ask_docker(
                self.docker.container_if_known, container_id), container_ids)
            self.containers = dict(zip(container_ids, answers))
        self.interfaces = self._interfaces_in_containers(self.containers)
        networks = []
        for network_id in network_ids:
            record = network_records.get(network_id)
            if record is None:
                self._unrecorded_vxlan(network_id, marked[network_id], in_docker[network_id])
                continue
            endpoints = {endpoint_id: Endpoint(endpoint_id, network_id, record_.get("mac", ""))
                         for endpoint_id, record_ in endpoint_records.items()
                         if record_.get("network") == network_id}
            networks.append(self._network(record, marked.get(network_id),
                                          in_docker[network_id], endpoints))
        self._leftover_macvlans(marked, networks)
        return {"docker": self.docker_error or "ok", "networks": networks, "drift": self.drift}

    # --- Docker --------------------------------------------------------------------

    def _ask_docker(self, lookup, key):
        """Docker's answer, or None: Docker does not know KEY, or did not answer
        (then docker_error says why, and Docker is not asked again)."""
        if self.docker_error:
            return None
        try:
            return lookup(key)
        except DockerLookupError as error:
            self.docker_error = f"unreachable: {error}"
            return None

    def _interfaces_in_containers(self, containers):
        """{PID: [links with their addresses]} in the network namespace of each
        running container's process."""
        pids = sorted({_pid(container) for container in containers.values()} - {None})
        chunks = [pids[i:i + NETNS_CHUNK] for i in range(0, len(pids), NETNS_CHUNK)]
        jobs = [gevent.spawn(self.ip.run, cmd.in_each_netns(chunk, cmd.show_addresses()))
                for chunk in chunks]
        gevent.joinall(jobs, raise_error=True)
        listings = {}
        for job in jobs:
            listings.update(cmd.outputs_by_pid(job.value))
        return listings

    # --- one network -----------------------------------------------------------------

    def _network(self, record, marked_link, docker_network, endpoints):
        network_id = record["id"]
        name = (docker_network or {}).get("Name")
        try:
            network = Network(network_id, parse_options(record["options"], self.vtepdev))
        except (OptionError, KeyError, TypeError) as error:
            # e.g. a Group network of a plugin started with -vtepdev, asked without it
            self._add(network_id, None, f"network {name or network_id[:12]}: its record cannot "
                      f"be read ({error}); give status the plugin's --vtepdev", [])
            return {"id": network_id, "name": name, "error": str(error)}
        options = network.options
        link = marked_link or self.by_name.get(network.link)
        in_docker = docker_network.get("Containers") or {} if docker_network else {}
        by_endpoint = {c.get("EndpointID"): (container_id, c)
                       for container_id, c in in_docker.items()}
        label = f"network {name or network_id[:12]}"
        if docker_network is None and not self.docker_error:
            self._add(network_id, None, f"{label}: Docker has no such network (removed while "
                      "the plugin was stopped?); in local scope the plugin forgets it at its "
                      "next start",
                      [cmd.link_delete(link["ifname"])] if link else [])
        fdb = self._check_vxlan(network, link, label, bool(endpoints or by_endpoint))
        endpoint_ids = list(endpoints) + [e for e in by_endpoint if e and e not in endpoints]
        entries = sorted((self._endpoint(network, link, name, endpoint_id,
                                         endpoints.get(endpoint_id), by_endpoint.get(endpoint_id),
                                         docker_network is not None)
                          for endpoint_id in endpoint_ids),
                         key=lambda entry: ((entry["container"] or {}).get("name", ""),
                                            entry["id"]))
        return {
            "id": network_id, "name": name, "vni": options.get("VxlanId"),
            "port": options.get("Port"), "group": options.get("Group"),
            "peers": list(options.peers),
            "vxlan": {"name": network.link, "exists": link is not None,
                      "up": bool(link) and "UP" in link.get("flags", []),
                      "mtu": link and link.get("mtu"), "ifindex": link and link.get("ifindex")},
            "flood": fdb, "containers": sum(1 for e in entries if e["container"]),
            "endpoints": entries,
        }

    def _check_vxlan(self, network, link, label, in_use):
        """Drift of the network's vxlan; returns its flood destinations (Peers)."""
        name, options = network.link, network.options
        if link is None:
            if in_use:
                self._add(network.id, None, f"{label}: its vxlan {name} is missing (deleted by "
                          "hand?); the containers' interfaces on it went with it",
                          vxlan_commands(network))
            return []
        what = f"{label}: vxlan {name}"
        if cmd.kind_of(link) != "vxlan":
            self._add(network.id, None, f"{what} is a {cmd.kind_of(link) or 'plain'} link, not "
                      "a vxlan; it was not made by the plugin: rename or remove it", [])
            return []
        owner = cmd.owner_of(link)
        if owner != network.id:
            whose = f"marked for network {owner[:12]}" if owner else "not marked as the plugin's"
            self._add(network.id, None, f"{what} is {whose}",
                      [cmd.mark_owned(name, network.id, up=True)] if not owner else [])
        elif "UP" not in link.get("flags", []):
            self._add(network.id, None, f"{what} is down",
                      [cmd.mark_owned(name, network.id, up=True)])
        link_args = options.ip_args("link")
        changed = cmd.differences(link, link_args)
        if changed:
            self._add(network.id, None, f"{what}: {_described(changed)}",
                      [cmd.link_set(name, link_args)])
        changed = cmd.differences(link, options.ip_args("vxlan"))
        if changed:
            self._add(network.id, None, f"{what}: {_described(changed)}; made anew, it takes "
                      "the containers' interfaces with it: restart them after",
                      [cmd.link_delete(name)] + vxlan_commands(network))
        if not options.peers:
            return []  # a Group's one flood entry is the kernel's, made with the vxlan
        flood = cmd.flood_destinations(self.ip.fdb(name))
        wanted = remote_peers(network)
        for peer in sorted(set(wanted) - set(flood)):
            self._add(network.id, None, f"{what} does not flood to peer {peer}",
                      [cmd.fdb_append_flood(name, peer)])
        for peer in sorted(set(flood) - set(wanted)):
            self._add(network.id, None, f"{what} floods to {peer}, not one of its Peers",
                      [cmd.fdb_delete_flood(name, peer)])
        return flood

    # --- one endpoint ------------------------------------------------------------------

    def _endpoint(self, network, link, network_name, endpoint_id, endpoint, in_docker,
                  docker_knows_network):
        """What the endpoint has, from its record (ENDPOINT), Docker's record of
        it (IN_DOCKER: (container ID, entry)) and the container's namespace."""
        container_id, entry = in_docker or (None, {})
        mac = endpoint.mac if endpoint else entry.get("MacAddress", "")
        container = self.containers.get(container_id) or {}
        container_name = (entry.get("Name") or container.get("Name", "").lstrip("/")
                          or (container_id or "")[:12])
        pid = _pid(container)
        found = {"id": endpoint_id,
                 "container": {"id": container_id, "name": container_name} if container_id
                 else None,
                 "pid": pid, "netns": f"/proc/{pid}/ns/net" if pid else None, "mac": mac,
                 "interface": None, "handed_over": None}
        label = f"endpoint {endpoint_id[:12]}"
        restart = [["docker", "restart", container_name]] if container_id else []
        if endpoint is None:
            self._add(network.id, endpoint_id, f"{label} of container {container_name}: the "
                      "plugin has no record of it", restart)
        elif not container_id and docker_knows_network and not self.docker_error:
            host_link = self.by_name.get(endpoint.link)
            self._add(network.id, endpoint_id, f"{label}: Docker does not list it on network "
                      f"{network_name}; the plugin forgets it at its next start",
                      [cmd.link_delete(endpoint.link)] if host_link else [])
        if not pid:
            return found
        where = f"container {container_name} on {network_name or network.id[:12]}"
        listing = self.interfaces.get(pid)
        if listing is None:  # a namespace lists at least its loopback
            self._add(network.id, endpoint_id, f"{where}: its network namespace "
                      f"{found['netns']} could not be entered (status needs root; or the "
                      "container stopped meanwhile)", [])
            return found
        interface = next((i for i in listing if i.get("address", "").lower() == mac.lower()),
                         None)
        if interface is None:
            self._add(network.id, endpoint_id, f"{where} has no interface with MAC {mac} (its "
                      f"macvlan on {network.link} is gone)", restart)
            return found
        found["interface"] = {
            "name": interface["ifname"], "mtu": interface.get("mtu"),
            "addresses": [f"{a['local']}/{a['prefixlen']}" for a in interface.get("addr_info", [])
                          if a.get("scope") != "link"]}
        found["handed_over"] = _is_macvlan_on(interface, link)
        if not found["handed_over"]:
            self._add(network.id, endpoint_id, f"{where}: its interface {interface['ifname']} "
                      f"(MAC {mac}) is not a bridge-mode macvlan on vxlan {network.link} "
                      f"({_parent_of(interface)})", restart)
        return found

    # --- links that belong to no network or endpoint --------------------------------------

    def _unrecorded_vxlan(self, network_id, link, docker_network):
        """A vxlan marked for a network the plugin has no record of: left over
        only if Docker does not know the network either."""
        what = f"vxlan {link['ifname']} is marked for network {network_id[:12]}"
        if docker_network:
            self._add(network_id, None, f"{what} ({docker_network.get('Name')} in Docker), of "
                      "which the plugin has no record; it asks Docker at the network's next "
                      "Join", [])
        elif self.docker_error:
            self._add(network_id, None, f"{what}, of which the plugin has no record (Docker "
                      "could not be asked)", [])
        else:
            self._add(network_id, None, f"{what}, which neither the plugin nor Docker knows",
                      [cmd.link_delete(link["ifname"])])

    def _leftover_macvlans(self, marked, networks):
        """Macvlans in this namespace on one of our vxlans that no endpoint owns.
        An endpoint's macvlan is here only between its Join and Docker moving it
        into the container, so such a one is in no container (the plugin deletes
        them at its start too)."""
        ours = {link["ifname"] for link in marked.values()}
        owned = {Endpoint(e["id"], "", "").link for n in networks for e in n.get("endpoints", [])}
        for name, link in self.by_name.items():
            if cmd.kind_of(link) == "macvlan" and link.get("link") in ours and name not in owned:
                self._add(cmd.owner_of(self.by_name[link["link"]]), None,
                          f"macvlan {name} on {link['link']} belongs to no endpoint",
                          [cmd.link_delete(name)])

    def _add(self, network_id, endpoint_id, what, repair):
        self.drift.append({"network": network_id, "endpoint": endpoint_id, "what": what,
                           "repair": [shlex.join(argv) for argv in repair]})


def _pid(container):
    state = (container or {}).get("State") or {}
    return state.get("Pid") or None if state.get("Running") else None


def _is_macvlan_on(interface, vxlan):
    """Whether a link seen in a container's namespace is a bridge-mode macvlan
    whose parent is VXLAN. The kernel gives the parent as its index in another
    namespace (link_netnsid): indexes are per namespace, and this namespace,
    where the plugin made the vxlan, is where the parent was when Docker moved
    the macvlan."""
    return (vxlan is not None and cmd.kind_of(interface) == "macvlan"
            and cmd.data_of(interface).get("mode") == "bridge"
            and "link_netnsid" in interface and interface.get("link_index") == vxlan["ifindex"])


def _parent_of(interface):
    kind = cmd.kind_of(interface) or "not a macvlan"
    if "link_index" not in interface:
        return f"{kind}, no parent"
    where = "another namespace" if "link_netnsid" in interface else "the container's namespace"
    return f"{kind} on link index {interface['link_index']} of {where}"


def _described(differences):
    return ", ".join(f"{setting} is {found or 'unset'}, its options say {wanted}"
                     for setting, wanted, found in differences)


# --- output ------------------------------------------------------------------------------

def table(report):
    """The report as an admin reads it."""
    lines = [f"state: {report['state_dir']}", f"Docker: {report['docker']}"]
    for network in report["networks"]:
        lines.append("")
        if "error" in network:
            lines.append(f"network {network['name'] or '?'} {network['id'][:12]}: "
                         f"{network['error']}")
            continue
        vxlan = network["vxlan"]
        state = ("up" if vxlan["up"] else "down") if vxlan["exists"] else "missing"
        flood = (f"group {network['group']}" if network["group"] else
                 f"peers {','.join(network['peers'])}" if network["peers"] else "no flooding")
        lines += _columns(
            ["NETWORK", "ID", "VNI", "PORT", "FLOOD", "VXLAN", "STATE", "MTU", "CONTAINERS"],
            [[network["name"] or "?", network["id"][:12], network["vni"], network["port"], flood,
              vxlan["name"], state, vxlan["mtu"] or "-", network["containers"]]])
        if network["peers"]:
            lines.append(f"  flood entries: {', '.join(network['flood']) or 'none'}")
        rows = []
        for endpoint in network["endpoints"]:
            container = endpoint["container"] or {"name": "?", "id": None}
            interface = endpoint["interface"] or {}
            handed = {True: "yes", False: "NO", None: "-"}[endpoint["handed_over"]]
            rows.append([container["name"], (container["id"] or "-")[:12],
                         endpoint["id"][:12], endpoint["netns"] or "-", endpoint["mac"],
                         interface.get("name", "-"),
                         " ".join(interface.get("addresses", [])) or "-",
                         interface.get("mtu", "-"), handed])
        if rows:
            lines += ["  " + line for line in _columns(
                ["CONTAINER", "ID", "ENDPOINT", "NETNS", "MAC", "IF", "ADDRESSES", "MTU",
                 "HANDED OVER"], rows)]
    lines.append("")
    drift = report["drift"]
    lines.append(f"drift: {len(drift) or 'none'}")
    for item in drift:
        lines.append(f"  {item['what']}")
        lines += [f"    repair: {command}" for command in item["repair"]]
    return "\n".join(lines)


def _columns(header, rows):
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in cells]
