"""HTTP in: Docker's remote network driver RPCs as Bottle routes.

Each RPC's body is checked against its schema before the driver sees it, and
this is the one place where an RPC's errors become {"Err": message} (a path
that is no RPC gets one from the 404/405 handler). Docker sends no
Content-Type, so bodies are read as JSON whatever the headers say.
"""

import json
import logging
import re
import time

import bottle

from .errors import OptionError, PluginError, RequestError
from .auditlog import request_context
from .options import MacAddress

log = logging.getLogger("vxlan.api")
CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"
IFNAME_OPTION = "com.docker.network.endpoint.ifname"
_DOCKER_ID = re.compile(r"^[0-9A-Za-z]{1,128}\Z")  # \Z: "$" allows a final "\n"


class DockerId:
    """A network or endpoint ID; link names and file names are made from it."""
    name = "an ID of letters and digits"

    @staticmethod
    def check(value):
        return isinstance(value, str) and bool(_DOCKER_ID.match(value))


class Of:
    def __init__(self, *types, name):
        self.types, self.name = types, name

    def check(self, value):
        return value is None or isinstance(value, self.types)


MAP = Of(dict, name="a JSON object")
LIST = Of(list, name="a JSON list")

# RPC name -> {field: (kind, required)}. Fields not named here are ignored, so
# newer engines may send more.
SCHEMAS = {
    "Plugin.Activate": {},
    "NetworkDriver.GetCapabilities": {},
    "NetworkDriver.CreateNetwork": {"NetworkID": (DockerId, True), "Options": (MAP, False),
                                    "IPv4Data": (LIST, False), "IPv6Data": (LIST, False)},
    "NetworkDriver.AllocateNetwork": {"NetworkID": (DockerId, True), "Options": (MAP, False)},
    "NetworkDriver.DeleteNetwork": {"NetworkID": (DockerId, True)},
    "NetworkDriver.FreeNetwork": {"NetworkID": (DockerId, True)},
    "NetworkDriver.CreateEndpoint": {"NetworkID": (DockerId, True),
                                     "EndpointID": (DockerId, True),
                                     "Interface": (MAP, False), "Options": (MAP, False)},
    "NetworkDriver.EndpointOperInfo": {"NetworkID": (DockerId, True),
                                       "EndpointID": (DockerId, True)},
    "NetworkDriver.DeleteEndpoint": {"NetworkID": (DockerId, True),
                                     "EndpointID": (DockerId, True)},
    "NetworkDriver.Join": {"NetworkID": (DockerId, True), "EndpointID": (DockerId, True),
                           "SandboxKey": (Of(str, name="a string"), False),
                           "Options": (MAP, False)},
    "NetworkDriver.Leave": {"NetworkID": (DockerId, True), "EndpointID": (DockerId, True)},
    "NetworkDriver.ProgramExternalConnectivity": {"NetworkID": (DockerId, True),
                                                  "EndpointID": (DockerId, True)},
    "NetworkDriver.RevokeExternalConnectivity": {"NetworkID": (DockerId, True),
                                                 "EndpointID": (DockerId, True)},
    "NetworkDriver.DiscoverNew": {},
    "NetworkDriver.DiscoverDelete": {},
}


def _handlers(driver):
    """RPC name -> function(body) -> answer."""
    return {
        "Plugin.Activate": lambda body: {"Implements": ["NetworkDriver"]},
        "NetworkDriver.GetCapabilities": lambda body: driver.capabilities(),
        "NetworkDriver.CreateNetwork": lambda body: driver.create_network(
            body["NetworkID"], body.get("Options"), _ip_data(body, "IPv4Data"),
            _ip_data(body, "IPv6Data")) or {},
        "NetworkDriver.AllocateNetwork": lambda body: driver.allocate_network(
            body["NetworkID"], body.get("Options")),
        "NetworkDriver.DeleteNetwork": lambda body: driver.delete_network(
            body["NetworkID"]) or {},
        "NetworkDriver.FreeNetwork": lambda body: driver.free_network(body["NetworkID"]) or {},
        "NetworkDriver.CreateEndpoint": lambda body: driver.create_endpoint(
            body["NetworkID"], body["EndpointID"],
            _interface(body.get("Interface"), body.get("Options"))),
        "NetworkDriver.EndpointOperInfo": lambda body: driver.endpoint_info(
            body["NetworkID"], body["EndpointID"]),
        "NetworkDriver.DeleteEndpoint": lambda body: _answer_delete_endpoint(driver, body),
        "NetworkDriver.Join": lambda body: driver.join(body["NetworkID"], body["EndpointID"]),
        "NetworkDriver.Leave": lambda body: {},
        "NetworkDriver.ProgramExternalConnectivity": lambda body: {},
        "NetworkDriver.RevokeExternalConnectivity": lambda body: {},
        "NetworkDriver.DiscoverNew": lambda body: {},
        "NetworkDriver.DiscoverDelete": lambda body: {},
    }


def _answer_delete_endpoint(driver, body):
    driver.delete_endpoint(body["NetworkID"], body["EndpointID"])  # its links go after this
    return {}


def _interface(interface, options):
    """CreateEndpoint's Interface, checked, and no name asked for in its Options:
    engine 28's `--network name=N,driver-opt=com.docker.network.endpoint.ifname=X`
    (or `network connect --driver-opt` on any engine) cannot be honoured, as
    Join's answer holds only a prefix and Docker numbers the name itself."""
    name = (options or {}).get(IFNAME_OPTION)
    if name:
        raise OptionError(f"driver option {IFNAME_OPTION}={str(name)[:80]}: the vxlan driver "
                          "cannot name the container's interface (Docker's remote driver "
                          "protocol lets it give only the prefix eth); leave the option out")
    interface = interface or {}
    for key in ("Address", "AddressIPv6", "MacAddress"):
        if not isinstance(interface.get(key, ""), str):
            raise RequestError(f"Interface.{key} must be a string")
    mac = interface.get("MacAddress")
    if mac:  # it becomes the macvlan's address at Join
        try:
            MacAddress().parse(mac)
        except ValueError:
            raise RequestError(f"Interface.MacAddress must be {MacAddress.accepted}, "
                               f"not {json.dumps(mac)[:80]}") from None
    return interface


def _ip_data(body, key):
    """IPv4Data/IPv6Data: a list of objects whose Gateway, if any, is a string."""
    entries = body.get(key) or []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise RequestError(f"{key}[{index}] must be a JSON object, "
                               f"not {json.dumps(entry)[:80]}")
        gateway = entry.get("Gateway")
        if gateway is not None and not isinstance(gateway, str):
            raise RequestError(f"{key}[{index}].Gateway must be a string, "
                               f"not {json.dumps(gateway)[:80]}")
    return entries


def parse_body(rpc, raw):
    """The request's JSON body, checked against the RPC's schema."""
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
        raise RequestError(f"{rpc}: the request body is not JSON ({error})") from None
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise RequestError(f"{rpc}: the request body must be a JSON object")
    for field, (kind, required) in SCHEMAS[rpc].items():
        if field not in body or body[field] is None:
            if required:
                raise RequestError(f"{rpc}: {field} is missing")
        elif not kind.check(body[field]):
            raise RequestError(f"{rpc}: {field} must be {kind.name}, "
                               f"not {json.dumps(body[field])[:80]}")
    return body


def answer(rpc, handler, raw_body):
    """(HTTP status, JSON answer) of one RPC: the one place errors become {"Err"}."""
    started = time.monotonic()
    token = None
    try:
        body = parse_body(rpc, raw_body)
        token = request_context.set({
            "rpc": rpc.split(".")[-1],
            **{key: body[field] for key, field in
               (("network", "NetworkID"), ("endpoint", "EndpointID"))
               if field in SCHEMAS[rpc]}})  # checked IDs only: the log cuts them to 12
        result = handler(body)
        log.debug("%s answered in %.1f ms", rpc, (time.monotonic() - started) * 1000)
        return 200, result
    except PluginError as error:
        log.error("%s failed: %s", rpc, error)
        return (400 if isinstance(error, RequestError) else 500), {"Err": str(error)}
    except Exception as error:  # a bug: keep serving, and tell Docker
        log.exception("%s failed unexpectedly", rpc)
        return 500, {"Err": f"internal error in the vxlan driver: {error!r}"}
    finally:
        if token is not None:
            request_context.reset(token)


def make_app(driver):
    app = bottle.Bottle()

    def route(rpc, handler):
        def serve_rpc():
            # the server's input, which has undone any chunked transfer encoding
            # (Bottle's request.body would undo it a second time, and fail)
            status, result = answer(rpc, handler, bottle.request.environ["wsgi.input"].read())
            return bottle.HTTPResponse(json.dumps(result), status,
                                       {"Content-Type": CONTENT_TYPE})
        app.route("/" + rpc, "POST", serve_rpc)

    for rpc, handler in _handlers(driver).items():
        route(rpc, handler)

    def no_such_rpc(error):
        bottle.response.content_type = CONTENT_TYPE
        return json.dumps({"Err": f"{bottle.request.method} {bottle.request.path}: "
                                  "not a method of this network driver"})

    app.error(404)(no_such_rpc)
    app.error(405)(no_such_rpc)
    return app
