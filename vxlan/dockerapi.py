"""The only module that talks to Docker's API (through the docker SDK).

The driver needs Docker only for what it cannot know itself: the options of a
network created on another host (global scope), and, when it reconciles at
start, which networks and endpoints still exist. Docker may be starting, and
waiting for this very plugin, when we ask: every call has a short timeout and
a failure becomes DockerLookupError, never a hang.
"""

import docker

from .errors import DockerLookupError

DOCKER_TIMEOUT = 5.0  # seconds


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
        """Docker's record of one network (`docker network inspect`)."""
        try:
            return self._api().inspect_network(network_id)
        except docker.errors.NotFound:
            raise DockerLookupError(f"Docker does not know network {network_id[:12]}") from None
        except Exception as error:  # the SDK raises requests', urllib3's and its own
            raise DockerLookupError(
                f"could not ask Docker about network {network_id[:12]}: {error}") from None

    def endpoints_of(self, network_id):
        """IDs of the network's endpoints on this host, or None if Docker does not
        know the network."""
        try:
            network = self._api().inspect_network(network_id)
        except docker.errors.NotFound:
            return None
        except Exception as error:
            raise DockerLookupError(f"could not ask Docker about network {network_id[:12]}: "
                                    f"{error}") from None
        return {c.get("EndpointID", "") for c in (network.get("Containers") or {}).values()}

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
