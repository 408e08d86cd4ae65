"""The HTTP layer: each RPC's body is checked before the driver sees it, and
errors of every kind come back as {"Err": ...}."""

import io
import json

import gevent
import pytest

from tests.unit.conftest import EP1, EP2, NET
from vxlan import api


@pytest.fixture
def app(driver):
    return api.make_app(driver)


def post(app, method, raw, http_method="POST"):
    """Calls the WSGI app as Docker would: no Content-Type, a JSON body."""
    if not isinstance(raw, bytes):
        raw = json.dumps(raw).encode()
    environ = {"REQUEST_METHOD": http_method, "PATH_INFO": "/" + method,
               "CONTENT_LENGTH": str(len(raw)), "wsgi.input": io.BytesIO(raw),
               "SERVER_NAME": "x", "SERVER_PORT": "0", "wsgi.url_scheme": "http",
               "wsgi.errors": io.StringIO()}
    status = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append((s, headers))))
    return int(status[0][0].split()[0]), json.loads(body), dict(status[0][1])


def test_activate_and_capabilities(app):
    assert post(app, "Plugin.Activate", b"")[:2] == (200, {"Implements": ["NetworkDriver"]})
    code, answer, headers = post(app, "NetworkDriver.GetCapabilities", b"")
    assert answer == {"Scope": "local", "ConnectivityScope": "local"}
    assert headers["Content-Type"] == "application/vnd.docker.plugins.v1+json"


@pytest.mark.parametrize("method", [m for m in api.SCHEMAS if m != "Plugin.Activate"])
def test_every_rpc_answers_json_to_garbage(app, method):
    for raw in (b"{nope", b"[1, 2]", b'"text"', b"\xff\xfe"):
        code, answer, _ = post(app, method, raw)
        assert code == 400 and "Err" in answer, (method, raw, answer)


@pytest.mark.parametrize("method, body, message", [
    ("NetworkDriver.CreateNetwork", {}, "NetworkID is missing"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": "../etc"}, "NetworkID must be an ID"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET, "Options": "x"},
     "Options must be a JSON object"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET, "IPv4Data": {}},
     "IPv4Data must be a JSON list"),
    ("NetworkDriver.Join", {"NetworkID": NET}, "EndpointID is missing"),
    ("NetworkDriver.CreateEndpoint", {"NetworkID": NET, "EndpointID": EP1,
                                      "Interface": {"MacAddress": 5}},
     "Interface.MacAddress must be a string"),
])
def test_schema_errors_name_the_field(app, method, body, message):
    code, answer, _ = post(app, method, body)
    assert code == 400 and message in answer["Err"]


def test_driver_errors_become_err(app):
    code, answer, _ = post(app, "NetworkDriver.CreateNetwork",
                           {"NetworkID": NET, "Options": {"com.docker.network.generic":
                                                          {"VxlanId": "x"}}})
    assert code == 500 and answer == {
        "Err": "option VxlanId: invalid value 'x'; expected an integer from 0 to 16777215 "
               "(decimal, 0x hex, or octal after a leading 0)"}


def test_newer_engines_extra_fields_are_ignored(app):
    code, answer, _ = post(app, "NetworkDriver.CreateNetwork", {
        "NetworkID": NET, "Options": {"com.docker.network.enable_ipv4": True,
                                      "com.docker.network.generic": {"VxlanId": "3"}},
        "IPv4Data": [{"Pool": "10.0.0.0/24", "Gateway": "10.0.0.1/24"}], "IPv6Data": None,
        "SomethingNew": {"x": 1}})
    assert (code, answer) == (200, {})


def test_engine_28_keys_are_ignored(app, ip):
    """What Docker Engine 28.5.2 sent, seen in a lab: enable_ipv4 (false on an
    IPv6-only network) and no_proxy_6to4."""
    code, answer, _ = post(app, "NetworkDriver.CreateNetwork", {
        "NetworkID": NET, "Options": {"com.docker.network.enable_ipv4": False,
                                      "com.docker.network.enable_ipv6": True,
                                      "com.docker.network.generic": {"VxlanId": "44"}},
        "IPv4Data": [], "IPv6Data": [{"AddressSpace": "LocalDefault", "Gateway": "fd44::1/64",
                                      "Pool": "fd44::/64"}]})
    assert (code, answer) == (200, {})
    post(app, "NetworkDriver.CreateEndpoint", {
        "NetworkID": NET, "EndpointID": EP1,
        "Interface": {"Address": "", "AddressIPv6": "fd44::2/64", "MacAddress": ""},
        "Options": {"com.docker.network.endpoint.exposedports": [],
                    "com.docker.network.portmap": []}})
    assert post(app, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP1})[1][
        "GatewayIPv6"] == "fd44::1"
    code, answer, _ = post(app, "NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": NET, "EndpointID": EP1,
        "Options": {"com.docker.network.driver.private.no_proxy_6to4": False,
                    "com.docker.network.endpoint.exposedports": [],
                    "com.docker.network.portmap": []}})
    assert (code, answer) == (200, {})


def test_interface_name_is_refused_at_create_endpoint(app, ip):
    """`--network name=N,driver-opt=com.docker.network.endpoint.ifname=foo`
    (engine 28) or `network connect --driver-opt ...` (every engine) reaches
    CreateEndpoint; Join's answer cannot name the interface, so say so rather
    than give the container eth<N> silently."""
    post(app, "NetworkDriver.CreateNetwork", {
        "NetworkID": NET, "Options": {"com.docker.network.generic": {"VxlanId": "42"}}})
    code, answer, _ = post(app, "NetworkDriver.CreateEndpoint", {
        "NetworkID": NET, "EndpointID": EP1,
        "Interface": {"Address": "10.42.0.1/24", "AddressIPv6": "", "MacAddress": ""},
        "Options": {"com.docker.network.endpoint.exposedports": [],
                    "com.docker.network.endpoint.ifname": "foo",
                    "com.docker.network.portmap": []}})
    assert code == 500
    assert answer["Err"].startswith("driver option com.docker.network.endpoint.ifname=foo: "
                                    "the vxlan driver cannot name the container's interface")
    assert post(app, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP1})[0] == 500
    assert ip.commands == []


def test_external_connectivity_in_any_order_any_number_of_times(app, ip):
    """Engine 29 sends Program only for the gateway endpoint and Revoke for the
    others, repeated when the gateway moves, a Revoke possibly first; older
    engines pair them. The driver has nothing to do: each answers {} and runs
    nothing, for a joined endpoint, an unknown one, and one already deleted."""
    post(app, "NetworkDriver.CreateNetwork", {
        "NetworkID": NET, "Options": {"com.docker.network.generic": {"VxlanId": "42"}}})
    post(app, "NetworkDriver.CreateEndpoint", {"NetworkID": NET, "EndpointID": EP1,
                                               "Interface": {"Address": "10.42.0.1/24"}})
    post(app, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP1})
    ran = list(ip.commands)
    program, revoke = ("NetworkDriver.ProgramExternalConnectivity",
                       "NetworkDriver.RevokeExternalConnectivity")
    endpoint = {"NetworkID": NET, "EndpointID": EP1}
    for method in (revoke, revoke, program, program, revoke, program):
        assert post(app, method, endpoint)[:2] == (200, {}), method
    for method in (revoke, program):
        assert post(app, method, {"NetworkID": NET, "EndpointID": EP2})[:2] == (200, {})
    post(app, "NetworkDriver.DeleteEndpoint", endpoint)
    gevent.sleep(0)  # the links go after the answer
    for method in (revoke, program):
        assert post(app, method, endpoint)[:2] == (200, {})
    assert ip.commands == ran + ["ip link delete dev macvlan_1111111",
                                 "ip link delete dev vx_aaaaaaaaaaaa"]


def test_unknown_path_and_method(app):
    assert post(app, "NetworkDriver.Bogus", {})[0] == 404
    assert post(app, "Plugin.Activate", b"", http_method="GET")[0] == 405


def test_no_op_rpcs(app):
    for method in ("NetworkDriver.Leave", "NetworkDriver.ProgramExternalConnectivity",
                   "NetworkDriver.RevokeExternalConnectivity", "NetworkDriver.FreeNetwork"):
        body = {"NetworkID": NET, "EndpointID": EP1}
        assert post(app, method, body)[:2] == (200, {})
    assert post(app, "NetworkDriver.DiscoverNew", {"DiscoveryType": 1})[:2] == (200, {})


@pytest.mark.parametrize("ip_data, message", [
    (["10.0.0.1/24"], "IPv4Data[0] must be a JSON object"),
    ([{"Gateway": 5}], "IPv4Data[0].Gateway must be a string"),
    ([{"Gateway": False}], "IPv4Data[0].Gateway must be a string"),
])
def test_ip_data_is_checked_before_the_driver(app, ip_data, message):
    code, answer, _ = post(app, "NetworkDriver.CreateNetwork", {
        "NetworkID": NET, "Options": {"com.docker.network.generic": {"VxlanId": "3"}},
        "IPv4Data": ip_data})
    assert code == 400 and message in answer["Err"]
