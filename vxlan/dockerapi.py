"""The only module that talks to Docker's API (through the docker SDK).

The driver needs Docker only for what it cannot know itself: a network it has
no record of (created on another host in global scope, or whose record was
lost), whether a swarm network that holds a VNI still exists, and, when it
reconciles at start, which networks and endpoints still exist. Docker may be
starting, and waiting for this very plugin, when we ask: every call has a
short timeout and a failure becomes DockerLookupError, never a hang.
"""

from dataclasses import dataclass

import docker

from .errors import DockerLookupError

DOCKER_TIMEOUT = 5.0  # seconds


@dataclass(frozen=True)
class DockerNetwork:
    """What the driver needs of Docker's record of a network."""

    options: dict      # the driver options, as given to `docker network create -o`
    ipam_config: list  # IPAM Config entries: Subnet, Gateway, ...
    internal: bool
    endpoints: dict    # endpoint ID -> MAC address, of the network's endpoints on this host

    @classmethod
    def from_inspect(cls, info):
        """From `docker network inspect`'s JSON, which lists the endpoints on
        this host (in local and in swarm scope) under Containers."""
        containers = (info.get("Containers") or {}).values()
        return cls(dict(info.get("Options") or {}),
                   list((info.get("IPAM") or {}).get("Config") or []),
                   bool(info.get("Internal")),
                   {c["EndpointID"]: c.get("MacAddress") or "" for c in containers
                    if isinstance(c, dict) and c.get("EndpointID")})


class DockerLookup:
    def __init__(self, timeout=DOCKER_TIMEOUT):
        self._timeout = timeout
        self._client = None

    def _api(self):
        if self._client is None:
            # from_env honours DOCKER_HOST (and DOCKER_TLS_VERIFY, DOCKER_CERT_PATH).
            self._client = docker.from_env(timeout=self._timeout).api
        return self._client

    def network(self, network_id):
        """Docker's DockerNetwork of that ID, or None if Docker does not know it;
        DockerLookupError if Docker does not answer."""
        info = self._inspect("network", network_id)
        if info is None:
            return None
        if any(not entry.get("Gateway") for entry in (info.get("IPAM") or {}).get("Config") or []):
            info = self._with_gateways_of_a_container(info)
        return DockerNetwork.from_inspect(info)

    def has_network(self, network_id):
        """Whether Docker knows the network; DockerLookupError if it does not answer."""
        return self._inspect("network", network_id) is not None

    def _with_gateways_of_a_container(self, info):
        """INFO with the gateways Docker's IPAM chose filled in: `network inspect`
        shows only those given to `network create`, a container shows its own."""
        for container_id in info.get("Containers") or {}:
            container = self._inspect("container", container_id)
            if container is None:  # gone meanwhile, or not a container ("ep-...")
                continue
            settings = container["NetworkSettings"]
            endpoint = (settings.get("Networks") or {}).get(info.get("Name")) or {}
            ipam = dict(info["IPAM"])
            ipam["Config"] = [
                {**entry, "Gateway": endpoint.get(
                    "IPv6Gateway" if ":" in entry.get("Subnet", "") else "Gateway")}
                if not entry.get("Gateway") else entry for entry in ipam["Config"]]
            return {**info, "IPAM": ipam}
        return info

    # --- for `docker-vxlan-plugin status` -------------------------------------------

    def network_if_known(self, network_id):
        """Docker's record of one network (`docker network inspect`), or None if
        Docker does not know it."""
        return self._inspect("network", network_id)

    def container_if_known(self, container_id):
        """Docker's record of one container (`docker inspect`), or None if it is gone."""
        return self._inspect("container", container_id)

    def _inspect(self, kind, key):
        """The SDK's inspect_network or inspect_container of KEY; None if not found."""
        try:
            return getattr(self._api(), f"inspect_{kind}")(key)
        except docker.errors.NotFound:
            return None
        except Exception as error:  # the SDK raises requests', urllib3's and its own
            raise DockerLookupError(f"could not ask Docker about {kind} {key[:12]}: "
                                    f"{error}") from None
