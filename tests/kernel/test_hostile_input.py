"""Hostile input, as property tests against one plugin process in a
throwaway namespace: every network option fed random and hostile values,
every RPC fed malformed JSON and wrong types. Each refusal is a clean
{"Err": ...} naming the problem (never an internal error or a traceback), the
plugin keeps serving, no link appears on the host, and no command runs with
a value that was not checked: a refused request runs nothing but the
read-only `ip -d -j link show`, and an accepted one only plain words.

Every value the plugin accepts is checked against the test's own reading of
the option list in README.md, independently of vxlan/options.py.
"""

import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from tests import rpc
from tests.kernel.conftest import Netns, Plugin, network_request, new_id

EXAMPLES = settings(max_examples=120, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

HOSTILE = [
    "", " ", "\t", "\n", "-", "--help", "-v", "-batch", "-1", "+1", "0x", "0x1g", "1e3",
    "1.5", "NaN", "null", "true ", "42\n", " 42", "4 2", "; reboot", "$(reboot)", "`id`",
    "a|b", "a&&b", "x > /etc/passwd", "'", '"', "\\", "#", "%", "\x00", "\r\n", "é",
    "ünïcødé", "١٢", "𝟘", "\u202e", "9" * 400, str(2**64), str(-2**63), "x" * 5000,
    "eth0 up", "eth0\n", "eth0;", "../../etc", "a" * 16, ".hidden", "-eth0",
    "02:42:0a:2a:00:05\n", "02:42:0a:2a:00:05 ", "01:00:5e:00:00:01", "00:00:00:00:00:00",
    "02-42-0a-2a-00-05", "fe80::1%eth0", "2001:db8::1%; reboot", "2001:db8::1%-x",
    "239.1.1.1\n", " 239.1.1.1", "0.0.0.0", "::", "192.0.2.2,", ",", "192.0.2.2,,192.0.2.3",
    "192.0.2.2, 2001:db8::2", "inherit\n", "inherit;",
]
WRONG_TYPES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
TEXT = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40),
                 st.from_regex(r"[-0-9a-fA-Fx:.,% inhert]{0,24}", fullmatch=True))
VALUES = st.one_of(TEXT, TEXT, WRONG_TYPES)

# --- the option list of README.md, read independently -------------------------------

_INTEGER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")
_NAME = re.compile(r"[A-Za-z0-9_+=@][A-Za-z0-9_.+=@-]{0,14}")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_BOOLEANS = {"true", "false", "1", "0", "yes", "no", "on", "off"}


def integer(low, high):
    def valid(text):
        return bool(_INTEGER.fullmatch(text)) and low <= int(text, 0 if text[:2].lower() == "0x"
                                                             else 10) <= high
    return valid


_GO_INTEGER = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def go_integer(low, high):
    """Go's strconv.ParseInt(s, 0, ...) as the Go original read VxlanId: 0x hex,
    a leading 0 octal, else decimal."""
    def valid(text):
        if not _GO_INTEGER.fullmatch(text):
            return False
        base = 16 if text[:2].lower() == "0x" else 8 if text[:1] == "0" else 10
        return low <= int(text, base) <= high
    return valid


def address(multicast):
    def valid(text):
        if "%" in text:  # an IPv6 scope is not an address the kernel takes here
            return False
        try:
            parsed = ipaddress.ip_address(text)
        except ValueError:
            return False
        return parsed.is_multicast == multicast and not parsed.is_unspecified
    return valid


def unicast_mac(text):
    return bool(_MAC.fullmatch(text)) and not int(text[:2], 16) & 1 and set(text) != {"0", ":"}


def boolean(text):
    return text.strip().lower() in _BOOLEANS


VALID = {
    "VxlanId": go_integer(0, 16777215),
    "vxlanName": _NAME.fullmatch,
    "vxlanMTU": integer(68, 65535),
    "com.docker.network.driver.mtu": integer(68, 65535),
    "vxlanHardwareAddr": unicast_mac,
    "vxlanTxQLen": integer(0, 2**32 - 1),
    "VtepDev": _NAME.fullmatch,
    "SrcAddr": address(multicast=False),
    "Group": address(multicast=True),
    "Peers": lambda text: all(address(multicast=False)(p.strip()) for p in text.split(",")),
    "TTL": integer(0, 255),
    "TOS": lambda text: integer(0, 255)(text) or text.strip().lower() == "inherit",
    "Learning": boolean,
    "Proxy": boolean,
    "RSC": boolean,
    "L2miss": boolean,
    "L3miss": boolean,
    "NoAge": boolean,
    "GBP": boolean,
    "Age": integer(0, 2**32 - 1),
    "Limit": integer(0, 2**32 - 1),
    "PortLow": integer(1, 65535),
    "PortHigh": integer(1, 65535),
    "Port": integer(1, 65535),
}

def _near_valid(name):
    """Values of the option's own kind, in range or just out of it."""
    kind = VALID[name]
    if kind == _NAME.fullmatch:
        return st.from_regex(r"[A-Za-z0-9_.+=@-]{1,16}", fullmatch=True)
    if kind is unicast_mac:
        return st.from_regex(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", fullmatch=True)
    if name in ("SrcAddr", "Group"):
        return st.ip_addresses().map(str)
    if name == "Peers":
        return st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=3).map(",".join)
    if kind is boolean:
        return st.sampled_from(sorted(_BOOLEANS)).map(str.upper) | st.sampled_from(["maybe"])
    return st.integers(-1, 2**33).map(str) | st.integers(0, 2**33).map(hex) | st.just("inherit")


OPTION_CASES = st.sampled_from(sorted(VALID)).flatmap(lambda name: st.tuples(
    st.sampled_from([name, name.lower(), name.upper()]), VALUES | _near_valid(name)))

# A command word that cannot be read as anything but one plain argument.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_.:/@+=,-]+")
_READ_ONLY = "ip -d -j link show"


# --- one plugin for the whole module ---------------------------------------------------

class Served:
    """The plugin, its namespace, and what the host looked like before."""

    def __init__(self, netns, plugin):
        self.netns, self.plugin = netns, plugin
        self.links = netns.link_names()
        self.network_id = new_id()  # a network the plugin knows (CreateEndpoint needs one)
        plugin.ok("CreateNetwork", network_request(self.network_id, {"VxlanId": "1"}))

    def mark(self):
        """Where the audit and the plugin's log are now."""
        return len(self.plugin.audit()), len(self.plugin.log())

    def commands_since(self, mark):
        """The ip and bridge commands run since MARK (not the announcements)."""
        return [r["cmd"] for r in self.plugin.audit()[mark[0]:]
                if r["event"] == "run" and not r["cmd"].startswith("announce ")]

    def check_refused(self, mark, status, answer, names):
        """A clean refusal that names one of names, and nothing but reading."""
        assert status in (400, 500), (status, answer)
        assert isinstance(answer, dict) and list(answer) == ["Err"], answer
        message = answer["Err"]
        assert isinstance(message, str) and message.strip()
        assert "internal error" not in message and "Traceback" not in message, message
        assert any(name.lower() in message.lower() for name in names), (names, message)
        assert all(cmd.startswith(_READ_ONLY) for cmd in self.commands_since(mark)), \
            self.commands_since(mark)
        self.check_still_fine(mark)

    def check_accepted(self, mark, status, answer):
        assert status == 200 and "Err" not in (answer or {}), (status, answer)
        self.check_plain_commands(mark)

    def check_plain_commands(self, mark):
        for cmd in self.commands_since(mark):
            assert cmd.startswith(_READ_ONLY) or all(
                _PLAIN_WORD.fullmatch(word) and (not word.startswith("-") or word == "-batch")
                for word in cmd.split(" ")), cmd
        self.check_still_fine(mark)

    def join_and_remove(self, network_id):
        """A container on an accepted network: it joins (or the kernel refuses a
        value, and what the Join made is undone) and is removed, then the network
        (the vxlan outlives its last container); the host ends as it was, and only
        plain words reached ip and bridge."""
        endpoint_id = new_id()
        self.plugin.ok("CreateEndpoint", {"NetworkID": network_id, "EndpointID": endpoint_id,
                                          "Interface": {"Address": "10.42.0.2/24"}})
        mark = self.mark()
        status, answer = self.plugin.call("Join", {"NetworkID": network_id,
                                                   "EndpointID": endpoint_id})
        event(f"Join of an accepted network: {status}")
        if status == 200:
            assert answer["InterfaceName"]["SrcName"] in self.netns.link_names()
        else:
            assert "internal error" not in answer["Err"], answer
        self.plugin.delete_endpoint(network_id, endpoint_id)
        self.plugin.ok("DeleteNetwork", {"NetworkID": network_id})
        self.check_plain_commands(mark)

    def check_still_fine(self, mark):
        assert self.plugin.ok("Plugin.Activate") == {"Implements": ["NetworkDriver"]}
        assert self.netns.link_names() == self.links
        new_log = self.plugin.log()[mark[1]:]
        assert "Traceback" not in new_log and "unexpectedly" not in new_log, new_log


@pytest.fixture(scope="module")
def served():
    if os.geteuid() != 0:
        pytest.skip("kernel tests need root")
    netns = Netns()
    workdir = tempfile.mkdtemp(prefix="dvk-")
    # No Docker here: looking up an unknown network fails at once, as it must.
    env = {**os.environ, "DOCKER_HOST": "unix://" + os.path.join(workdir, "no-docker.sock")}
    plugin = Plugin(netns, workdir, env=env)  # no --vtepdev: VtepDev is an option here
    try:
        plugin.start()
        yield Served(netns, plugin)
    finally:
        plugin.stop()
        netns.delete()
        shutil.rmtree(workdir, ignore_errors=True)


# --- CreateNetwork: every option, random and hostile values ------------------------------

def create_network_with(served, options):
    mark = served.mark()
    network_id = new_id()
    status, answer = served.plugin.call("CreateNetwork", network_request(network_id, options))
    return mark, network_id, status, answer


@EXAMPLES
@given(case=OPTION_CASES, vxlan_id=st.integers(2, 16777215))
@example(case=("vxlanName", "vx\n"), vxlan_id=2)
@example(case=("VtepDev", "eth0\n"), vxlan_id=2)
@example(case=("vxlanHardwareAddr", "02:42:0a:2a:00:05\n"), vxlan_id=2)
@example(case=("VxlanId", "42\n"), vxlan_id=2)
@example(case=("SrcAddr", "2001:db8::1%-x"), vxlan_id=2)
@example(case=("Group", "ff05::1%x"), vxlan_id=2)
@example(case=("Peers", "2001:db8::2%;reboot"), vxlan_id=2)
def test_every_option_with_hostile_values(served, case, vxlan_id):
    key, value = case
    canonical = next(name for name in VALID if name.lower() == key.lower())
    options = {key: value} if canonical == "VxlanId" else {"VxlanId": str(vxlan_id), key: value}
    names = [key, canonical] + (["vxlanMTU"] if canonical.startswith("com.docker.") else [])
    mark, network_id, status, answer = create_network_with(served, options)
    if status == 200:
        try:
            assert isinstance(value, str) and VALID[canonical](value), \
                f"accepted {key}={value!r}, which is not {canonical}'s kind of value"
            served.check_accepted(mark, status, answer)
            served.join_and_remove(network_id)
        finally:
            served.plugin.ok("DeleteNetwork", {"NetworkID": network_id})
    else:
        served.check_refused(mark, status, answer, names)


@EXAMPLES
@given(key=st.text(max_size=30), value=VALUES)
def test_unknown_option_names(served, key, value):
    assume(key.lower() not in {name.lower() for name in VALID})
    mark, network_id, status, answer = create_network_with(served, {"VxlanId": "3", key: value})
    if key.lower().startswith("com.docker."):  # Docker's own: left to Docker
        served.plugin.ok("DeleteNetwork", {"NetworkID": network_id})
        served.check_accepted(mark, status, answer)
    else:
        served.check_refused(mark, status, answer, [key[:60]])


# --- every RPC: malformed JSON and wrong types ---------------------------------------

RPCS = ["Plugin.Activate", "NetworkDriver.GetCapabilities", "NetworkDriver.CreateNetwork",
        "NetworkDriver.AllocateNetwork", "NetworkDriver.DeleteNetwork",
        "NetworkDriver.FreeNetwork", "NetworkDriver.CreateEndpoint",
        "NetworkDriver.EndpointOperInfo", "NetworkDriver.DeleteEndpoint", "NetworkDriver.Join",
        "NetworkDriver.Leave", "NetworkDriver.ProgramExternalConnectivity",
        "NetworkDriver.RevokeExternalConnectivity", "NetworkDriver.DiscoverNew",
        "NetworkDriver.DiscoverDelete"]
# RPCs whose body the driver reads; the others answer the same to any body.
WITH_BODY = [rpc for rpc in RPCS if rpc not in (
    "Plugin.Activate", "NetworkDriver.GetCapabilities", "NetworkDriver.DiscoverNew",
    "NetworkDriver.DiscoverDelete")]

MALFORMED = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"{", b"[", b'{"NetworkID": }', b"\xff\xfe{}", b"{}{}", b'{"a":1}x',
                     b"nul", b"[" * 3000, b'{"NetworkID":' * 3000, b"\x00", b"{'a': 1}",
                     b'"\\ud800"', b"1" * 5000]),
    st.sampled_from([[], [1], 5, -1.5, "text", True]).map(lambda v: json.dumps(v).encode()))


def valid_body(served, rpc_name):
    """A well-formed request; its network is known to the plugin only where the
    driver would otherwise ask Docker before reading the rest."""
    network = served.network_id if rpc_name.endswith("CreateEndpoint") else new_id()
    options = {"com.docker.network.enable_ipv6": False,
               "com.docker.network.generic": {"VxlanId": "4"}}
    if rpc_name.endswith("AllocateNetwork"):  # swarm's manager sends the `-o` map itself
        options = {"VxlanId": "4"}
    return {"NetworkID": network, "EndpointID": new_id(), "Options": options,
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.9.0.0/24",
                          "Gateway": "10.9.0.1/24"}],
            "IPv6Data": [],
            "Interface": {"Address": "10.9.0.2/24", "AddressIPv6": "", "MacAddress": ""},
            "SandboxKey": "/var/run/docker/netns/x"}


# The fields of each request that the driver needs (see remote-driver-api.md);
# others are ignored, whatever their value.
USED_FIELDS = {
    "NetworkDriver.CreateNetwork": {"NetworkID", "Options", "IPv4Data", "IPv6Data"},
    "NetworkDriver.AllocateNetwork": {"NetworkID", "Options"},
    "NetworkDriver.DeleteNetwork": {"NetworkID"}, "NetworkDriver.FreeNetwork": {"NetworkID"},
    "NetworkDriver.CreateEndpoint": {"NetworkID", "EndpointID", "Interface", "Options"},
    "NetworkDriver.Join": {"NetworkID", "EndpointID", "SandboxKey", "Options"},
    "NetworkDriver.ProgramExternalConnectivity": {"NetworkID", "EndpointID", "Options"},
}
# RPCs that do not ask Docker about an unknown network
LOCAL_RPCS = ["NetworkDriver.CreateNetwork", "NetworkDriver.AllocateNetwork",
              "NetworkDriver.CreateEndpoint"]


def valid_interface(text):
    try:
        ipaddress.ip_interface(text)
        return True
    except ValueError:
        return False


# (path in the body, the names an error about it may use)
FIELDS = [(("NetworkID",), ["NetworkID"]), (("EndpointID",), ["EndpointID"]),
          (("Options",), ["Options", "VxlanId"]),
          (("Options", "com.docker.network.generic"), ["options", "VxlanId"]),
          (("IPv4Data",), ["IPv4Data"]), (("IPv4Data", 0), ["IPv4Data"]),
          (("IPv4Data", 0, "Gateway"), ["Gateway"]), (("IPv6Data",), ["IPv6Data"]),
          (("Interface",), ["Interface"]), (("Interface", "Address"), ["Address"]),
          (("Interface", "MacAddress"), ["MacAddress"]), (("SandboxKey",), ["SandboxKey"])]
ID_VALUES = st.one_of(VALUES, st.sampled_from(["abc\n", "a" * 129, "../../x", "-x", "Ａ1",
                                               "a b", "a" * 128]))


def set_path(body, path, value):
    for step in path[:-1]:
        body = body[step]
    body[path[-1]] = value


@EXAMPLES
@given(rpc_name=st.sampled_from(RPCS), raw=MALFORMED)
@example(rpc_name="NetworkDriver.Join", raw=b"[" * 3000)
def test_every_rpc_with_malformed_bodies(served, rpc_name, raw):
    mark = served.mark()
    status, answer = rpc.call_raw(served.plugin.socket, rpc_name, raw)
    if status == 200:  # RPCs that read no body
        assert rpc_name not in WITH_BODY, (rpc_name, raw[:80], answer)
        served.check_accepted(mark, status, answer)
    else:
        served.check_refused(mark, status, answer, [rpc_name])


@EXAMPLES
@given(rpc_name=st.sampled_from(WITH_BODY), field=st.sampled_from(FIELDS), value=ID_VALUES)
@example(rpc_name="NetworkDriver.CreateNetwork", field=FIELDS[0], value="abc\n")
@example(rpc_name="NetworkDriver.CreateEndpoint", field=FIELDS[10], value="-x")
@example(rpc_name="NetworkDriver.CreateEndpoint", field=FIELDS[10], value="01:00:5e:00:00:01")
@example(rpc_name="NetworkDriver.CreateNetwork", field=FIELDS[5], value="10.9.0.1/24")
@example(rpc_name="NetworkDriver.CreateNetwork", field=FIELDS[6], value=5)
@example(rpc_name="NetworkDriver.CreateNetwork", field=FIELDS[6], value=False)
@example(rpc_name="NetworkDriver.CreateNetwork", field=FIELDS[1], value=None)
def test_every_rpc_with_a_wrong_field(served, rpc_name, field, value):
    path, names = field
    body = valid_body(served, rpc_name)
    set_path(body, path, value)
    mark = served.mark()
    status, answer = served.plugin.call(rpc_name, body)
    if status == 200:
        if rpc_name.endswith("CreateEndpoint"):
            served.plugin.delete_endpoint(body["NetworkID"], body["EndpointID"])
        if rpc_name.endswith("DeleteEndpoint"):  # what it deletes follows the answer
            served.plugin.wait_for_deletion(body["EndpointID"], mark[0])
        if rpc_name.endswith("CreateNetwork"):
            served.plugin.ok("DeleteNetwork", {"NetworkID": body["NetworkID"]})
        if rpc_name.endswith("AllocateNetwork"):  # its VNI, free for the next example
            served.plugin.ok("FreeNetwork", {"NetworkID": body["NetworkID"]})
        served.check_accepted(mark, status, answer)
        if path[0] not in USED_FIELDS.get(rpc_name, {"NetworkID", "EndpointID"}):
            return  # a field this RPC does not have: ignored
        assert path[0] not in ("NetworkID", "EndpointID") or (
            isinstance(value, str) and re.fullmatch(r"[0-9A-Za-z]{1,128}", value)), value
        assert path[-1] != "Gateway" or value in ("", None) or (
            isinstance(value, str) and valid_interface(value)), f"accepted Gateway {value!r}"
        if rpc_name.endswith("CreateEndpoint"):
            mac = body["Interface"]["MacAddress"] if isinstance(body["Interface"], dict) else ""
            assert mac in ("", None) or unicast_mac(mac), f"accepted MacAddress {mac!r}"
    else:
        if rpc_name not in LOCAL_RPCS:  # its network and endpoint are unknown here
            names = names + ["could not ask Docker", "is unknown to the vxlan driver"]
        served.check_refused(mark, status, answer, names)


def test_wrong_http_methods_and_paths(served):
    for method in ("GET", "PUT", "DELETE"):
        mark = served.mark()
        status, answer = rpc.call_raw(served.plugin.socket, "NetworkDriver.Join", b"{}",
                                      http_method=method)
        assert status == 405 and "not a method" in answer["Err"], (method, status, answer)
        served.check_still_fine(mark)
    status, answer = rpc.call_raw(served.plugin.socket, "NetworkDriver.Nope;rm", b"{}")
    assert status == 404 and "not a method" in answer["Err"]


# --- the socket is root's alone ------------------------------------------------------

def test_a_non_root_user_cannot_connect(served):
    workdir = os.path.dirname(served.plugin.socket)
    os.chmod(workdir, 0o755)  # so that only the socket's own mode stands in the way
    try:
        connect = ["/usr/bin/python3", "-c", "import socket, sys\n"
                   "s = socket.socket(socket.AF_UNIX)\n"
                   "s.connect(sys.argv[1])\n", served.plugin.socket]
        as_nobody = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                                    "--clear-groups", *connect],
                                   capture_output=True, text=True, timeout=30)
        assert as_nobody.returncode != 0 and "PermissionError" in as_nobody.stderr, as_nobody
        as_root = subprocess.run(connect, capture_output=True, text=True, timeout=30)
        assert as_root.returncode == 0, as_root.stderr
    finally:
        os.chmod(workdir, 0o700)
