"""The command vocabulary: the ip and bridge commands the plugin runs, as argv
lists, and how to read the links that `ip -d -j link show` reports.

Pure functions: nothing here runs anything (runner.py does). The driver and
`explain` build their command lists from these, so what `explain` prints is
what a request runs.
"""

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


def fdb_show(dev):
    """The forwarding database of DEV (a vxlan: which VTEP each MAC is behind)."""
    return ["bridge", "-j", "fdb", "show", "dev", dev]


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
