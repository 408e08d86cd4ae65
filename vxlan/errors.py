"""Exceptions that carry a message meant for the user.

Anything raised as a PluginError reaches Docker as {"Err": message} (see api.py),
so the message must make sense on its own in `docker network create`'s output.
"""


class PluginError(Exception):
    """A request that cannot be served; str(error) is shown to the user."""


class OptionError(PluginError):
    """A network option (or a combination of options) that is not accepted."""


class RequestError(PluginError):
    """A driver RPC whose JSON body is not what the protocol says."""


class CommandError(PluginError):
    """An ip/bridge command that failed, timed out or could not be started."""

    def __init__(self, message, stderr=""):
        super().__init__(message)
        self.stderr = stderr


class DockerLookupError(PluginError):
    """Docker's API did not answer what we asked for in time."""


class StateError(PluginError):
    """The state directory could not be written (full, read-only, gone)."""
