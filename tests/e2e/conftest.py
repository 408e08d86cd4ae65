"""Fixtures of the tests on one lab host with the plugin running."""

import pytest

PLUGIN_FLAGS = ["-vtepdev", "eth0"]


@pytest.fixture(scope="module")
def host(lab1):
    """The lab's host with the plugin running (-vtepdev eth0), for the module."""
    host = lab1.hosts[0]
    host.start_plugin(PLUGIN_FLAGS)
    try:
        yield host
    finally:
        host.stop_plugin()


@pytest.fixture
def cleanup(host):
    """Names of containers and networks to remove after the test, whatever
    happens (with the plugin running again if the test stopped it: Docker
    asks it to remove them)."""
    made = {"containers": [], "networks": []}
    yield made
    if not host.plugin_running():
        host.start_plugin(PLUGIN_FLAGS)
    for name in made["containers"]:
        host.docker("rm", "-f", name, check=False)
    for name in made["networks"]:
        host.docker("network", "rm", name, check=False)
