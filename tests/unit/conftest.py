"""The unit tests' stand-ins for ip and Docker, and a driver built on them."""

import pytest

from vxlan import recovery
from vxlan.driver import Driver
from vxlan.errors import CommandError, DockerLookupError
from vxlan.commands import kind_of
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

    def run(self, argv, cause=None):
        return self.batch([argv], cause)

    def links(self, kind=None):
        return [link for link in self.existing.values()
                if kind is None or kind_of(link) == kind]

    def link(self, name):
        return self.existing.get(name)

    def mtu(self, name):
        return self.existing[name]["mtu"] if name in self.existing else None


class FakeDocker:
    def __init__(self, networks=None):
        self.networks = networks or {}
        self.asked = []

    def network(self, network_id):
        self.asked.append(network_id)
        if network_id not in self.networks:
            raise DockerLookupError(f"Docker does not know network {network_id[:12]}")
        return self.networks[network_id]


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
