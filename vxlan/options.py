"""The network options: one table that drives parsing, validation, the `ip`
arguments of the vxlan link, `explain`, and the option list in README.md.

A user writes `docker network create -d vxlan -o VxlanId=42 ...`; Docker hands
us the `-o` map as strings. `parse_options` turns it into `NetworkOptions`,
or raises OptionError naming the option, the value and what is accepted.
No value reaches `ip` other than in the form it was validated as.
"""

import difflib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable

from .errors import OptionError

DEFAULT_DSTPORT = 4789
U32_MAX = 2**32 - 1


# --- value types: parse(text) -> value, or ValueError; `accepted` says what is.

class Integer:
    """Decimal or 0x hex; with `octal`, a leading 0 means octal, as in the Go
    original's VxlanId (strconv.ParseInt(s, 0, 32), Go 1.5: 010 is 8), so that
    a host moving over from it keeps the same VNI."""

    _syntax = re.compile(r"^(0[xX][0-9a-fA-F]+|[0-9]+)\Z")  # \Z: "$" allows a final "\n"
    _octal = re.compile(r"^0[0-7]+\Z")

    def __init__(self, low, high, octal=False):
        self.low, self.high, self.octal = low, high, octal
        forms = "decimal, 0x hex, or octal after a leading 0" if octal else "decimal or 0x hex"
        self.accepted = f"an integer from {low} to {high} ({forms})"
        self.example = "N"  # a placeholder: the README shows the form, not a value

    def parse(self, text):
        if not self._syntax.match(text):
            raise ValueError
        if text[:2].lower() == "0x":
            value = int(text, 16)
        elif self.octal and text[:1] == "0" and len(text) > 1:
            if not self._octal.match(text):
                raise ValueError  # 08, 09: not octal, and Go refused them too
            value = int(text, 8)
        else:
            value = int(text, 10)
        if not self.low <= value <= self.high:
            raise ValueError
        return value


class Boolean:
    accepted = "true or false (also 1/0, yes/no, on/off)"
    example = True
    _words = {"true": True, "1": True, "yes": True, "on": True,
              "false": False, "0": False, "no": False, "off": False}

    def parse(self, text):
        return self._words[text.strip().lower()]


class InterfaceName:
    accepted = ("an interface name: 1 to 15 of the characters A-Z a-z 0-9 _ . - + = @, "
                "not starting with '-' or '.'")
    example = "eth0"
    _syntax = re.compile(r"^[A-Za-z0-9_+=@][A-Za-z0-9_.+=@-]{0,14}\Z")

    def parse(self, text):
        if not self._syntax.match(text):
            raise ValueError
        return text


class MacAddress:
    accepted = "a unicast MAC address such as 02:42:0a:2a:00:05"
    example = "02:42:0a:2a:00:05"
    _syntax = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z")

    def parse(self, text):
        if not self._syntax.match(text):
            raise ValueError
        first_octet = int(text[:2], 16)
        if first_octet & 1 or text.replace(":", "") == "0" * 12:
            raise ValueError  # multicast or all-zero: the kernel refuses both
        return text.lower()


class IpAddress:
    """An IPv4 or IPv6 address; `multicast` True/False requires/forbids it."""

    def __init__(self, multicast):
        self.multicast = multicast
        kind = "a multicast" if multicast else "a unicast"
        self.accepted = f"{kind} IPv4 or IPv6 address"
        self.example = "239.1.1.1" if multicast else "192.0.2.1"

    def parse(self, text):
        if "%" in text:  # ipaddress takes an IPv6 scope ("fe80::1%anything"); ip does not
            raise ValueError
        address = ipaddress.ip_address(text)  # ValueError on bad syntax
        if address.is_multicast != self.multicast or address.is_unspecified:
            raise ValueError
        return str(address)


class AddressList:
    accepted = "a comma-separated list of unicast IPv4 or IPv6 addresses"
    _address = IpAddress(multicast=False)

    def parse(self, text):
        parts = [part.strip() for part in text.split(",")]
        if not text.strip() or not all(parts):
            raise ValueError
        return tuple(dict.fromkeys(self._address.parse(part) for part in parts))


class Tos:
    accepted = "an integer from 0 to 255 (decimal or 0x hex), or inherit"
    example = 16
    _byte = Integer(0, 255)

    def parse(self, text):
        return "inherit" if text.strip().lower() == "inherit" else self._byte.parse(text)


# --- the table ------------------------------------------------------------------

def _flag(word):
    """A yes/no vxlan setting that ip writes as WORD or noWORD."""
    return lambda value, _: [word if value else "no" + word]


def _when_true(*args):
    return lambda value, _: list(args) if value else []


def _pair(word):
    return lambda value, _: [word, str(value)]


def _srcport(low, values):
    return ["srcport", str(low), str(values["PortHigh"])]


def _peers_family(peers, values):
    # The kernel takes a vxlan's address family from its local, group or remote
    # address, and the peers are only fdb entries: without an IPv6 address the
    # vxlan stays IPv4 and refuses IPv6 peers ("Address family not supported").
    if ipaddress.ip_address(peers[0]).version == 6 and "SrcAddr" not in values:
        return ["local", "::"]
    return []


def _tos(value, _):
    # ip reads TOS in hex (rtnl_dsfield_a2n), so "16" would mean 0x16: always write hex.
    return ["tos", value if value == "inherit" else f"0x{value:02x}"]


@dataclass(frozen=True)
class Option:
    name: str
    value_type: Any
    summary: str
    section: str = ""           # "link" (before `type vxlan`), "vxlan" (after it), or ""
    ip_args: Callable = None    # (value, all values) -> list of ip arguments
    default: Any = None
    aliases: tuple = ()


OPTIONS = (
    Option("VxlanId", Integer(0, 16777215, octal=True),
           "VXLAN Network Identifier (VNI). Required.", "vxlan", _pair("id")),
    Option("vxlanName", InterfaceName(),
           "Name of the vxlan link; default `vx_` + the first 12 characters of the network ID."),
    Option("vxlanMTU", Integer(68, 65535),
           "MTU of the vxlan link, and so of every container on it; default: the VTEP "
           "device's MTU (without one, the smallest MTU of the routes to the Peers) minus "
           "the VXLAN overhead.", "link", _pair("mtu"),
           aliases=("com.docker.network.driver.mtu",)),
    Option("vxlanHardwareAddr", MacAddress(), "MAC address of the vxlan link.",
           "link", _pair("address")),
    Option("vxlanTxQLen", Integer(0, U32_MAX), "Transmit queue length of the vxlan link.",
           "link", _pair("txqueuelen")),
    Option("VtepDev", InterfaceName(),
           "Underlay device for the tunnel endpoint; the daemon flag -vtepdev overrides it.",
           "vxlan", _pair("dev")),
    Option("SrcAddr", IpAddress(multicast=False),
           "Source IP address of outgoing VXLAN packets.", "vxlan", _pair("local")),
    Option("Group", IpAddress(multicast=True),
           "Multicast group that carries broadcast and unknown traffic; needs a VTEP device.",
           "vxlan", _pair("group")),
    Option("Peers", AddressList(),
           "Remote VTEP addresses that get broadcast and unknown traffic by head-end "
           "replication (one `bridge fdb append` each); for fabrics without multicast. "
           "Not with Group.", "vxlan", _peers_family),
    Option("TTL", Integer(0, 255),
           "TTL of outgoing VXLAN packets; 0 leaves it to the kernel.", "vxlan", _pair("ttl")),
    Option("TOS", Tos(), "TOS of outgoing VXLAN packets.", "vxlan", _tos),
    Option("Learning", Boolean(),
           "Learn remote MAC addresses into the forwarding database (kernel default: on).",
           "vxlan", _flag("learning")),
    Option("Proxy", Boolean(), "Answer ARP/ND from the forwarding database (ARP proxy).",
           "vxlan", _flag("proxy")),
    Option("RSC", Boolean(), "Route short circuit.", "vxlan", _flag("rsc")),
    Option("L2miss", Boolean(), "Send netlink notifications on link-layer address misses.",
           "vxlan", _flag("l2miss")),
    Option("L3miss", Boolean(), "Send netlink notifications on IP address misses.",
           "vxlan", _flag("l3miss")),
    Option("NoAge", Boolean(),
           "Ask for learnt entries never to age (`ageing 0`); see the note on ageing.",
           "vxlan", _when_true("ageing", "0")),
    Option("GBP", Boolean(), "Group Based Policy extension (VXLAN-GBP).",
           "vxlan", _when_true("gbp")),
    Option("Age", Integer(0, U32_MAX),
           "Lifetime in seconds of learnt forwarding entries (kernel default 300).",
           "vxlan", _pair("ageing")),
    Option("Limit", Integer(0, U32_MAX),
           "Most forwarding entries the vxlan keeps; 0 means no limit.",
           "vxlan", _pair("maxaddress")),
    Option("PortLow", Integer(1, 65535),
           "Lowest UDP source port; give PortHigh too.", "vxlan", _srcport),
    Option("PortHigh", Integer(1, 65535),
           "Highest UDP source port; give PortLow too.", "vxlan", lambda value, _: []),
    Option("Port", Integer(1, 65535),
           "UDP destination port (default 4789, the IANA port).", "vxlan", _pair("dstport"),
           default=DEFAULT_DSTPORT),
)

_BY_KEY = {}
for _option in OPTIONS:
    for _key in (_option.name, *_option.aliases):
        _BY_KEY[_key.lower()] = _option


def _closest(name):
    names = [option.name for option in OPTIONS]
    match = difflib.get_close_matches(name.lower(), [n.lower() for n in names], 1, 0.6)
    return next(n for n in names if n.lower() == match[0]) if match else None


def _shown(text):
    """A user's value quoted for an error message, cut short if it is long."""
    return repr(text if len(text) <= 64 else text[:61] + "...")


@dataclass(frozen=True)
class NetworkOptions:
    """Validated options of one network. `values` maps option names to parsed values."""

    values: dict
    raw: dict  # canonical name -> the string the user gave (what state.py stores)

    def get(self, name):
        return self.values.get(name)

    def link_name(self, network_id):
        return self.values.get("vxlanName") or default_link_name(network_id)

    def ip_args(self, section):
        args = []
        for option in OPTIONS:
            if option.section == section and option.name in self.values:
                args += option.ip_args(self.values[option.name], self.values)
        return args

    @property
    def peers(self):
        return self.values.get("Peers", ())


def default_link_name(network_id):
    """The vxlan's name without vxlanName, as the Go original named it too."""
    return "vx_" + network_id[:12]


def parse_options(raw, vtepdev=None):
    """Validate Docker's `-o` map. `vtepdev` is the daemon's -vtepdev, which wins."""
    if not isinstance(raw, dict):
        raise OptionError("network options must be a map of option names to strings")
    given = {}
    for key, text in raw.items():
        if not isinstance(key, str):
            raise OptionError(f"option name {key!r} is not a string")
        option = _BY_KEY.get(key.lower())
        if option is None:
            if key.lower().startswith("com.docker."):
                continue  # Docker's own namespace: meant for Docker, not for this driver
            hint = _closest(key)
            suggestion = f"; did you mean '{hint}'?" if hint else ""
            raise OptionError(f"unknown option '{key}'{suggestion} "
                              "(run `docker-vxlan-plugin options` for the list)")
        if not isinstance(text, str):
            raise OptionError(f"option {option.name}: value {text!r} is not a string")
        if option.name in given and given[option.name][1] != text:
            raise OptionError(f"option {option.name} is given twice with different values "
                              f"({given[option.name][0]}={_shown(given[option.name][1])}, "
                              f"{key}={_shown(text)})")
        given[option.name] = (key, text)

    values = {}
    for name, (key, text) in given.items():
        option = _BY_KEY[name.lower()]
        try:
            values[name] = option.value_type.parse(text)
        except (ValueError, KeyError):
            raise OptionError(f"option {key}: invalid value {_shown(text)}; expected "
                              f"{option.value_type.accepted}") from None
    if vtepdev:
        values["VtepDev"] = vtepdev
    for option in OPTIONS:
        if option.default is not None:
            values.setdefault(option.name, option.default)
    _check_combinations(values)
    return NetworkOptions(values, {name: text for name, (_, text) in given.items()})


def _check_combinations(values):
    if "VxlanId" not in values:
        raise OptionError("option VxlanId is required: add -o VxlanId=N (0 to 16777215)")
    if "Group" in values and "Peers" in values:
        raise OptionError("options Group and Peers exclude each other: use Group on a "
                          "fabric that carries multicast, Peers on one that does not")
    if "Group" in values and "VtepDev" not in values:
        raise OptionError(f"option Group={values['Group']} needs a VTEP device: add "
                          "-o VtepDev=DEV or start the plugin with -vtepdev DEV")
    if ("PortLow" in values) != ("PortHigh" in values):
        raise OptionError("options PortLow and PortHigh go together: give both")
    if "PortLow" in values and values["PortLow"] > values["PortHigh"]:
        raise OptionError(f"option PortLow={values['PortLow']} is above "
                          f"PortHigh={values['PortHigh']}")
    if "NoAge" in values and "Age" in values:
        raise OptionError("options NoAge and Age exclude each other: give one")
    addresses = [values[n] for n in ("SrcAddr", "Group") if n in values]
    addresses += values.get("Peers", ())
    if len({ipaddress.ip_address(a).version for a in addresses}) > 1:
        raise OptionError("options SrcAddr, Group and Peers must all be IPv4 or all IPv6, "
                          f"not a mix ({', '.join(addresses)})")


def options_table_markdown():
    """The option list of README.md, made from the table so the two cannot drift."""
    rows = ["| option | accepted values | what it does | becomes |", "|---|---|---|---|"]
    for option in OPTIONS:
        keys = " or ".join(f"`{key}`" for key in (option.name, *option.aliases))
        rows.append(f"| {keys} | {option.value_type.accepted} | {option.summary} "
                    f"| {_becomes(option)} |")
    return "\n".join(rows)


def _becomes(option):
    """The ip arguments an example value turns into, for the README."""
    special = {"vxlanName": "the link's name",
               "Peers": "`bridge fdb append`; IPv6 peers without SrcAddr also `local ::`"}
    if option.name in special:
        return special[option.name]
    example = option.default if option.default is not None else option.value_type.example
    forms = [option.ip_args(example, {"PortHigh": "HIGH"})]
    if isinstance(option.value_type, Boolean):
        forms.append(option.ip_args(False, {}))
    return " / ".join(f"`{' '.join(args)}`" for args in forms if args) or "(with PortLow)"
