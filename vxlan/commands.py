"""The command vocabulary: the ip and bridge commands the plugin runs, as argv
lists, and how to read the links that `ip -d -j link show` reports.

Pure functions: nothing here runs anything (runner.py does). The driver and
`explain` build their command lists from these, so what `explain` prints is
what a request runs.
"""

import json
import re
import shlex

OWNER_PREFIX = "docker-vxlan-plugin:"  # the alias that marks links this plugin created
ANY_MAC = "00:00:00:00:00:00"  # fdb entry for broadcast and unknown destinations


def vxlan_add(name, link_args, vxlan_args):
    return ["ip", "link", "add", name, *link_args, "type", "vxlan", *vxlan_args]


def macvlan_add(name, parent, mac):
    return ["ip", "link", "add", name, "link", parent, "address", mac,
            "type", "macvlan", "mode", "bridge"]


def mark_owned(name, owner_id, up=False):
    """Records in the link itself (its alias) which network or endpoint it serves."""
    return ["ip", "link", "set", "dev", name, "alias", OWNER_PREFIX + owner_id] + (
        ["up"] if up else [])


def link_delete(name):
    return ["ip", "link", "delete", "dev", name]


def fdb_append_flood(dev, peer):
    return ["bridge", "fdb", "append", ANY_MAC, "dev", dev, "dst", peer]


def show_link(name):
    return ["ip", "-d", "-j", "link", "show", "dev", name]


def show_links(kind=None):
    return ["ip", "-d", "-j", "link", "show"] + (["type", kind] if kind else [])


def owner_of(link):
    """The network/endpoint ID a link (as `ip -j link` shows it) was marked with."""
    alias = link.get("ifalias", "")
    return alias[len(OWNER_PREFIX):] if alias.startswith(OWNER_PREFIX) else None


def kind_of(link):
    """"vxlan", "macvlan", ... of a link as `ip -d -j link` shows it."""
    return link.get("linkinfo", {}).get("info_kind")


def data_of(link):
    """The kind's own settings (a vxlan's id, port, ...) as `ip -d -j link` shows them."""
    return link.get("linkinfo", {}).get("info_data", {})


def link_set(name, link_args):
    """Sets what `ip link add NAME <link_args> type ...` set (mtu, address, ...) on a link."""
    return ["ip", "link", "set", "dev", name, *link_args]


def fdb_delete_flood(dev, peer):
    return ["bridge", "fdb", "del", ANY_MAC, "dev", dev, "dst", peer]


def show_fdb(dev):
    """The forwarding database of DEV (a vxlan: which VTEP each MAC is behind)."""
    return ["bridge", "-j", "fdb", "show", "dev", dev]


def show_addresses():
    return ["ip", "-d", "-j", "addr", "show"]


def in_each_netns(pids, argv):
    """One shell that runs ARGV (a query) in the network namespace of each
    process PID, each output after a line "#PID". A fork from a small shell
    costs a fraction of one from Python; a process that is gone meanwhile
    leaves its part empty."""
    script = f'for pid; do echo "#$pid"; nsenter -t "$pid" -n {shlex.join(argv)} || true; done'
    return ["sh", "-c", script, "sh", *map(str, pids)]


def outputs_by_pid(stdout):
    """{PID: the JSON each part of in_each_netns's output holds} (None if empty)."""
    pieces = re.split(r"^#(\d+)$", stdout, flags=re.MULTILINE)[1:]
    return {int(pid): json.loads(output) if output.strip() else None
            for pid, output in zip(pieces[::2], pieces[1::2])}


def is_query(argv):
    """Whether a command only reads (`... show`): it changes nothing, and a
    replay of the log skips it."""
    return "show" in argv


def flood_destinations(fdb):
    """Where a vxlan sends broadcast and unknown traffic, from `bridge -j fdb show dev VX`."""
    return sorted(entry["dst"] for entry in fdb if entry.get("mac") == ANY_MAC and "dst" in entry)


# --- reading back what the ip arguments of a vxlan set ----------------------------------

def _vxlan_field(key, default=None):
    return lambda link: _text(data_of(link).get(key, default))


def _either_field(*keys):
    return lambda link: _text(next((data_of(link)[k] for k in keys if k in data_of(link)), None))


def _switch(word):
    """A yes/no setting ip writes as WORD or noWORD; the kernel omits most when off."""
    return lambda link: word if data_of(link).get(word) else "no" + word


def _tos(link):
    tos = data_of(link).get("tos", "0x0")
    return f"0x{int(tos, 16):02x}"


def _text(value):
    return None if value is None else str(value)


# word -> (how many values follow it, reader(link) -> the kernel's value as the
# argument's text), for every word options.py writes for a vxlan
SETTINGS = {
    "mtu": (1, lambda link: _text(link.get("mtu"))),
    "address": (1, lambda link: link.get("address")),
    "txqueuelen": (1, lambda link: _text(link.get("txqlen"))),
    "id": (1, _vxlan_field("id")),
    "dev": (1, _vxlan_field("link")),
    "local": (1, _either_field("local", "local6")),
    "group": (1, _either_field("group", "group6")),
    "ttl": (1, _vxlan_field("ttl", 0)),
    "tos": (1, _tos),
    "ageing": (1, _vxlan_field("ageing")),
    "maxaddress": (1, _vxlan_field("limit", 0)),
    "srcport": (2, lambda link: "{low} {high}".format(**data_of(link).get("port_range", {
        "low": 0, "high": 0}))),
    "dstport": (1, _vxlan_field("port")),
    "gbp": (0, lambda link: "gbp" if data_of(link).get("gbp") else "no gbp"),
    **{word: (0, _switch(word)) for word in ("learning", "proxy", "rsc", "l2miss", "l3miss")},
}
# Values the kernel reports differently from how they were given: "inherit"
# is TOS 1; kernels since 6.x report `ageing 0` as their default, 300; and
# `ip` shows no local address for `local ::` (only its family is set).
_SAME = {("tos", "inherit"): {"0x01"}, ("ageing", "0"): {"0", "300"}, ("local", "::"): {None}}


def settings(args):
    """[(setting, text)] of ip arguments, e.g. ["ttl", "5", "nolearning"] ->
    [("ttl", "5"), ("learning", "nolearning")]."""
    found, index = [], 0
    while index < len(args):
        word = args[index]
        setting = word[2:] if word.startswith("no") and word[2:] in SETTINGS else word
        count = SETTINGS[setting][0]
        found.append((setting, " ".join(args[index + 1:index + 1 + count]) or word))
        index += 1 + count
    return found


def differences(link, args):
    """[(setting, wanted, found)] for each of the ip arguments ARGS that the
    link, as `ip -d -j link show` reports it, does not have."""
    different = []
    for setting, wanted in settings(args):
        found = SETTINGS[setting][1](link)
        if found != wanted and found not in _SAME.get((setting, wanted), ()):
            different.append((setting, wanted, found))
    return different
