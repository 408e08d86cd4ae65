"""The unit tests' stand-ins for ip and Docker, and a driver built on them."""

import pytest

from vxlan import recovery
from vxlan.driver import Driver
from vxlan.errors import CommandError, DockerLookupError
from vxlan.commands import kind_of, show_fdb
from vxlan.dockerapi import DockerNetwork
from vxlan.state import StateStore

NET = "a" * 64
NET2 = "b" * 64
EP1 = "1" * 64
EP2 = "2" * 64


class RecordingIp:
    """Stands in for runner.Ip: records commands (and the cause of those that no
    request explains), keeps the link names they make, and fails the first
    command that contains `fail_on`."""

    def __init__(self, links=()):
        self.commands = []
        self.causes = {}
        self.existing = {link["ifname"]: link for link in links}
        self.fail_on = None

    def batch(self, commands, cause=None):
        for index, argv in enumerate(commands):
            line = " ".join(argv)
            if self.fail_on and self.fail_on in line:
                self.fail_on = None
                error = CommandError(f"`{line}` failed", "RTNETLINK answers: File exists")
                error.done = commands[:index]
                raise error
            self.commands.append(line)
            if cause:
                self.causes[line] = cause
            if argv[:3] == ["ip", "link", "add"]:
                self.existing[argv[3]] = {"ifname": argv[3], "mtu": 1500}
            if argv[:3] == ["ip", "link", "delete"]:
                self.existing.pop(argv[4], None)
        return ""

    def run(self, argv):
        return self.batch([argv])

    def fdb(self, dev):
        self.run(show_fdb(dev))
        return []

    def links(self, kind=None):
        return [link for link in self.existing.values()
                if kind is None or kind_of(link) == kind]

    def link(self, name):
        return self.existing.get(name)

    def mtu(self, name):
        return self.existing[name]["mtu"] if name in self.existing else None


class FakeDocker:
    """Stands in for dockerapi.DockerLookup: NETWORKS maps IDs to what `docker
    network inspect` answers; with answering=False, Docker does not answer."""

    def __init__(self, networks=None, answering=True):
        self.networks = networks or {}
        self.answering = answering
        self.asked = []

    def network(self, network_id):
        self.asked.append(network_id)
        if not self.answering:
            raise DockerLookupError(f"could not ask Docker about network {network_id[:12]}")
        info = self.networks.get(network_id)
        return None if info is None else DockerNetwork.from_inspect(info)

    def has_network(self, network_id):
        return self.network(network_id) is not None


def inspect(network_id, options, endpoints=(), gateway="10.42.0.254"):
    """`docker network inspect`'s JSON (Engine 20.10) of a local network with
    ENDPOINTS [(endpoint ID, MAC)] here."""
    return {
        "Name": "vxlan42", "Id": network_id, "Created": "2026-12-01T10:00:00.0Z",
        "Scope": "local", "Driver": "vxlan", "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [
            {"Subnet": "10.42.0.0/24", "IPRange": "10.42.0.0/25", "Gateway": gateway}]},
        "Internal": False, "Attachable": False, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
        "Containers": {f"{index:064x}": {"Name": f"c{index}", "EndpointID": endpoint_id,
                                         "MacAddress": mac, "IPv4Address": "10.42.0.1/24",
                                         "IPv6Address": ""}
                       for index, (endpoint_id, mac) in enumerate(endpoints)},
        "Options": options, "Labels": {}}


ETH0 = {"ifname": "eth0", "mtu": 1500}


@pytest.fixture
def ip():
    return RecordingIp([ETH0])


@pytest.fixture
def driver(ip, tmp_path):
    """A driver that deletes a vxlan with its last endpoint (--vxlan-linger 0)."""
    made = Driver(ip, FakeDocker(), StateStore(str(tmp_path)), vtepdev="eth0", vxlan_linger=0)
    recovery.load(made)
    return made
