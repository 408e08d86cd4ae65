"""How `status` reads the kernel back: the ip arguments of a vxlan against what
`ip -d -j link show` reports (real output of kernel 6.x), the output of the
per-container listing, and which interface in a container is the plugin's."""

import json

import pytest

from vxlan import commands as cmd
from vxlan.options import OPTIONS, parse_options
from vxlan.status import _is_macvlan_on, survey, table

# `ip -d -j link show` of a vxlan made with
#   ip link add vx_a mtu 1400 txqueuelen 500 address 02:42:0a:00:00:09 type vxlan id 42
#   dev eth0 group 239.1.1.1 dstport 4789 ttl 5 tos 0x10 nolearning proxy rsc l2miss
#   l3miss ageing 100 maxaddress 50 srcport 1000 2000 gbp
VX_A = {
    "ifindex": 4, "ifname": "vx_a", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
    "mtu": 1400, "txqlen": 500, "address": "02:42:0a:00:00:09",
    "linkinfo": {"info_kind": "vxlan", "info_data": {
        "id": 42, "group": "239.1.1.1", "link": "eth0", "port_range": {"low": 1000, "high": 2000},
        "port": 4789, "learning": False, "proxy": True, "rsc": True, "l2miss": True,
        "l3miss": True, "tos": "0x10", "ttl": 5, "df": "unset", "ageing": 100, "limit": 50,
        "udp_csum": True, "udp_zero_csum6_tx": False, "udp_zero_csum6_rx": False, "gbp": True}},
}
# ... and of `ip link add vx_b type vxlan id 43 dev eth0 dstport 4789` (kernel defaults)
VX_B = {
    "ifindex": 3, "ifname": "vx_b", "flags": ["BROADCAST", "MULTICAST"], "mtu": 1450,
    "txqlen": 1000, "address": "e2:e6:b5:be:9e:8d",
    "linkinfo": {"info_kind": "vxlan", "info_data": {
        "id": 43, "link": "eth0", "port_range": {"low": 0, "high": 0}, "port": 4789,
        "learning": True, "ttl": 0, "df": "unset", "ageing": 300, "udp_csum": True,
        "udp_zero_csum6_tx": False, "udp_zero_csum6_rx": False}},
}
VX_A_OPTIONS = {"VxlanId": "42", "vxlanMTU": "1400", "vxlanTxQLen": "500",
                "vxlanHardwareAddr": "02:42:0a:00:00:09", "VtepDev": "eth0",
                "Group": "239.1.1.1", "TTL": "5", "TOS": "16", "Learning": "false",
                "Proxy": "true", "RSC": "true", "L2miss": "true", "L3miss": "true", "Age": "100",
                "Limit": "50", "PortLow": "1000", "PortHigh": "2000", "GBP": "true"}


def args_of(raw):
    options = parse_options(raw)
    return options.ip_args("link") + options.ip_args("vxlan")


def test_a_vxlan_made_with_its_options_has_no_differences():
    assert cmd.differences(VX_A, args_of(VX_A_OPTIONS)) == []
    assert cmd.differences(VX_B, args_of({"VxlanId": "43", "VtepDev": "eth0"})) == []


def test_each_setting_that_differs_is_named_with_both_values():
    wanted = args_of({**VX_A_OPTIONS, "VxlanId": "43", "TTL": "6", "Learning": "true",
                      "vxlanMTU": "1300", "PortHigh": "3000"})
    assert cmd.differences(VX_A, wanted) == [
        ("mtu", "1300", "1400"), ("id", "43", "42"), ("ttl", "6", "5"),
        ("learning", "learning", "nolearning"), ("srcport", "1000 3000", "1000 2000")]


def test_what_the_kernel_reports_in_its_own_way():
    # TOS inherit is TOS 1; `ageing 0` comes back as the kernel's default, 300
    inherit = {**VX_B, "linkinfo": {"info_kind": "vxlan", "info_data": {
        **VX_B["linkinfo"]["info_data"], "tos": "0x1"}}}
    assert cmd.differences(inherit, ["tos", "inherit", "ageing", "0"]) == []
    assert cmd.differences(VX_B, ["tos", "0x00", "gbp", "maxaddress", "0"]) == [
        ("gbp", "gbp", "no gbp")]


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.name)
def test_every_ip_argument_of_the_option_table_can_be_read_back(option):
    """A new option whose ip argument status cannot check fails here."""
    examples = {"Boolean": [True, False], "Integer": [7], "AddressList": [("2001:db8::2",)]}
    values = examples.get(type(option.value_type).__name__) or [option.value_type.example]
    for value in values:
        if option.ip_args is None:
            continue
        for setting, _ in cmd.settings(option.ip_args(value, {"PortHigh": "2"})):
            assert setting in cmd.SETTINGS


def test_outputs_of_one_listing_per_container_namespace():
    stdout = '#101\n[{"ifname":"lo"}]\n#102\n#103\n[]\n'
    assert cmd.outputs_by_pid(stdout) == {101: [{"ifname": "lo"}], 102: None, 103: []}
    assert cmd.in_each_netns([101, 102], cmd.show_addresses())[-2:] == ["101", "102"]


# `ip -d -j addr show` in a container, for the plugin's macvlan (parent: ifindex 3
# in the host's namespace) and for Docker's loopback
IN_CONTAINER = {"ifindex": 4, "link_index": 3, "ifname": "eth0", "mtu": 1450,
                "address": "02:42:0a:2a:00:01", "link_netnsid": 0,
                "linkinfo": {"info_kind": "macvlan", "info_data": {"mode": "bridge"}}}


@pytest.mark.parametrize("interface, vxlan, handed_over", [
    (IN_CONTAINER, {"ifindex": 3}, True),
    (IN_CONTAINER, {"ifindex": 9}, False),        # on another parent
    (IN_CONTAINER, None, False),                   # the vxlan is gone
    ({**IN_CONTAINER, "linkinfo": {"info_kind": "macvlan", "info_data": {"mode": "private"}}},
     {"ifindex": 3}, False),
    ({k: v for k, v in IN_CONTAINER.items() if k != "link_netnsid"}, {"ifindex": 3}, False),
    ({**IN_CONTAINER, "linkinfo": {"info_kind": "veth"}}, {"ifindex": 3}, False),
])
def test_the_interface_the_plugin_handed_over(interface, vxlan, handed_over):
    assert _is_macvlan_on(interface, vxlan) is handed_over


def test_the_table_lists_networks_containers_and_repairs():
    report = {"state_dir": "/var/lib/docker-vxlan-plugin", "docker": "ok", "networks": [{
        "id": "c4ef79f90aa7" + "0" * 52, "name": "vxlan42", "vni": 42, "port": 4789,
        "group": None, "peers": ["192.0.2.12"], "flood": ["192.0.2.12"],
        "vxlan": {"name": "vx_c4ef79f90aa7", "exists": True, "up": True, "mtu": 1450,
                  "ifindex": 3},
        "containers": 1, "endpoints": [{
            "id": "8cb05b62f46a" + "0" * 52, "container": {"id": "6338" * 16, "name": "c1"},
            "pid": 30737, "netns": "/proc/30737/ns/net", "mac": "02:42:0a:2a:00:01",
            "interface": {"name": "eth0", "mtu": 1450, "addresses": ["10.42.0.1/24"]},
            "handed_over": True}]}],
        "drift": [{"network": "c4ef", "endpoint": None, "what": "vxlan vx_c4ef79f90aa7 is down",
                   "repair": ["ip link set dev vx_c4ef79f90aa7 up"]}]}
    lines = table(report).splitlines()
    assert lines[3].split() == ["NETWORK", "ID", "VNI", "PORT", "FLOOD", "VXLAN", "STATE", "MTU",
                                "CONTAINERS"]
    assert lines[4].split() == ["vxlan42", "c4ef79f90aa7", "42", "4789", "peers", "192.0.2.12",
                                "vx_c4ef79f90aa7", "up", "1450", "1"]
    assert lines[7].split() == ["c1", "633863386338", "8cb05b62f46a", "/proc/30737/ns/net",
                                "02:42:0a:2a:00:01", "eth0", "10.42.0.1/24", "1450", "yes"]
    assert lines[-2:] == ["  vxlan vx_c4ef79f90aa7 is down",
                          "    repair: ip link set dev vx_c4ef79f90aa7 up"]


class OneContainer:
    """Docker as `status` asks it, with one running container (PID 4242) on one network."""

    def __init__(self, network_id, endpoint_id):
        self.network = {"Name": "vxlan42", "Containers": {"c" * 64: {
            "Name": "c1", "EndpointID": endpoint_id, "MacAddress": "02:42:0a:2a:00:01"}}}
        self.network_id = network_id

    def network_if_known(self, network_id):
        return self.network if network_id == self.network_id else None

    def container_if_known(self, container_id):
        return {"Name": "/c1", "State": {"Running": True, "Pid": 4242}}


class Kernel:
    """The kernel's answers: no links here, and nothing from the container's namespace."""

    def links(self, kind=None):
        return []

    def run(self, argv):
        return "#4242\n"  # what in_each_netns prints when nsenter fails


def test_a_namespace_that_cannot_be_entered_is_said_not_taken_for_a_lost_interface(tmp_path):
    network_id, endpoint_id = "a" * 64, "e" * 64
    report = survey(str(tmp_path / "none"), Kernel(), OneContainer(network_id, endpoint_id))
    assert report["state_dir"] == str(tmp_path / "none") + " (missing)"
    # no record of the network: its endpoints are not looked at, nothing to say
    assert report["networks"] == [] and report["drift"] == []

    (tmp_path / "state" / "networks").mkdir(parents=True)
    (tmp_path / "state" / "endpoints").mkdir()
    (tmp_path / "state" / "networks" / f"{network_id}.json").write_text(json.dumps(
        {"id": network_id, "options": {"VxlanId": "42"}}))
    (tmp_path / "state" / "endpoints" / f"{endpoint_id}.json").write_text(json.dumps(
        {"id": endpoint_id, "network": network_id, "mac": "02:42:0a:2a:00:01"}))
    report = survey(str(tmp_path / "state"), Kernel(), OneContainer(network_id, endpoint_id))
    assert [item["what"] for item in report["drift"]] == [
        f"network vxlan42: its vxlan vx_{network_id[:12]} is missing (deleted by hand?); the "
        "containers' interfaces on it went with it",
        "container c1 on vxlan42: its network namespace /proc/4242/ns/net could not be entered "
        "(status needs root; or the container stopped meanwhile)"]
