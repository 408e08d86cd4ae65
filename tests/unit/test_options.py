"""The option table: every option with good and bad values, names in any case,
combinations, and the README's option list made from the same table."""

import os
import re

import pytest

from vxlan.errors import OptionError
from vxlan.options import OPTIONS, options_table_markdown, parse_options

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# option -> (good value, its ip arguments) and bad values
GOOD = {
    "VxlanId": ("0x2A", ["id", "42"]),
    "vxlanMTU": ("1400", ["mtu", "1400"]),
    "vxlanHardwareAddr": ("02:AB:cd:00:00:01", ["address", "02:ab:cd:00:00:01"]),
    "vxlanTxQLen": ("500", ["txqueuelen", "500"]),
    "VtepDev": ("eth0.100", ["dev", "eth0.100"]),
    "SrcAddr": ("2001:DB8::1", ["local", "2001:db8::1"]),
    "Group": ("239.1.1.1", ["group", "239.1.1.1"]),
    "TTL": ("64", ["ttl", "64"]),
    "TOS": ("16", ["tos", "0x10"]),
    "Learning": ("off", ["nolearning"]),
    "Proxy": ("Yes", ["proxy"]),
    "RSC": ("1", ["rsc"]),
    "L2miss": ("true", ["l2miss"]),
    "L3miss": ("FALSE", ["nol3miss"]),
    "NoAge": ("true", ["ageing", "0"]),
    "GBP": ("on", ["gbp"]),
    "Age": ("3600", ["ageing", "3600"]),
    "Limit": ("0", ["maxaddress", "0"]),
    "Port": ("8472", ["dstport", "8472"]),
}
BAD = {
    "VxlanId": ["16777216", "-1", "4x", "0x", "1e3", " 42", "42.0", "", "08", "0o10", "0b1"],
    "vxlanName": ["-rf", "a" * 16, "has space", "a/b", "x:1", "", ".hidden", "vx;rm"],
    "vxlanMTU": ["67", "65536", "big"],
    "vxlanHardwareAddr": ["01:00:5e:00:00:01", "00:00:00:00:00:00", "02:00:00:00:00",
                          "02-00-00-00-00-01", "zz:00:00:00:00:01"],
    "vxlanTxQLen": ["4294967296", "-5"],
    "VtepDev": ["-eth0", "eth 0", "e" * 16],
    "SrcAddr": ["239.1.1.1", "0.0.0.0", "192.0.2.300", "host.example", "::"],
    "Group": ["192.0.2.1", "2001:db8::1", "239.1.1"],
    "Peers": ["", "192.0.2.1,", "239.1.1.1", "192.0.2.1;192.0.2.2", "192.0.2.1 192.0.2.2"],
    "TTL": ["256", "inherit", "-1"],
    "TOS": ["256", "0x100", "lowdelay"],
    "Learning": ["maybe", "", "2", "t"],
    "Age": ["4294967296", "1h"],
    "Limit": ["-1"],
    "PortLow": ["0", "65536"],
    "Port": ["0", "65536", "http"],
}


def parse(**raw):
    return parse_options({"VxlanId": "1", **raw} if "VxlanId" not in raw else raw)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_value_becomes_its_ip_arguments(name):
    text, expected = GOOD[name]
    extra = {"VtepDev": "eth0"} if name == "Group" else {}
    options = parse(**{name: text}, **extra)
    section = next(o.section for o in OPTIONS if o.name == name)
    args = options.ip_args(section)
    assert " ".join(expected) in " ".join(args)


@pytest.mark.parametrize("name, text", [(n, t) for n, values in BAD.items() for t in values])
def test_bad_value_names_option_value_and_what_is_accepted(name, text):
    with pytest.raises(OptionError) as raised:
        parse(**{name: text})
    message = str(raised.value)
    assert f"option {name}" in message
    assert repr(text) in message
    assert "expected" in message


def test_every_option_has_good_and_bad_cases():
    names = {o.name for o in OPTIONS}
    assert names - set(GOOD) - set(BAD) <= {"PortHigh"}  # tested with PortLow below
    assert not set(GOOD) - names and not set(BAD) - names


@pytest.mark.parametrize("text, vni", [("010", 8), ("0777", 511), ("0", 0), ("00", 0),
                                       ("10", 10), ("0x10", 16), ("0X1f", 31)])
def test_vxlan_id_reads_base_prefixes_as_the_go_original_did(text, vni):
    # The original parsed VxlanId with Go's strconv.ParseInt(s, 0, 32) (Go 1.5):
    # a leading 0 is octal, 0x hex. A host moving over keeps the same VNI.
    assert parse(VxlanId=text).get("VxlanId") == vni


def test_a_leading_zero_is_read_as_octal_only_for_vxlan_id():
    # every other integer was strconv.Atoi's: decimal, leading zeros and all
    assert parse(Port="08472").get("Port") == 8472
    assert parse(vxlanMTU="01400").get("vxlanMTU") == 1400


def test_names_match_in_any_case():
    options = parse_options({"vxlanid": "7", "VXLANNAME": "vx7", "learning": "false"})
    assert options.get("VxlanId") == 7 and options.link_name("abc") == "vx7"
    assert options.raw == {"VxlanId": "7", "vxlanName": "vx7", "Learning": "false"}


def test_unknown_option_suggests_the_closest():
    with pytest.raises(OptionError, match=r"unknown option 'VxLanID2'; did you mean 'VxlanId'\?"):
        parse_options({"VxLanID2": "42"})
    with pytest.raises(OptionError, match="did you mean 'Group'"):
        parse_options({"VxlanId": "1", "groop": "239.1.1.1"})


def test_docker_namespace_is_left_to_docker():
    options = parse_options({"VxlanId": "1", "com.docker.network.something.new": "x"})
    assert "com.docker.network.something.new" not in options.raw


def test_dockers_mtu_option_is_vxlan_mtu():
    options = parse_options({"VxlanId": "1", "com.docker.network.driver.mtu": "1300"})
    assert options.ip_args("link") == ["mtu", "1300"]
    same = parse_options({"VxlanId": "1", "vxlanMTU": "1300",
                          "com.docker.network.driver.mtu": "1300"})
    assert same.ip_args("link") == ["mtu", "1300"]
    with pytest.raises(OptionError, match="given twice with different values"):
        parse_options({"VxlanId": "1", "vxlanMTU": "1400", "com.docker.network.driver.mtu": "1300"})


def test_srcport_range():
    options = parse(PortLow="1000", PortHigh="2000")
    assert "srcport 1000 2000" in " ".join(options.ip_args("vxlan"))
    with pytest.raises(OptionError, match="PortLow=3000 is above PortHigh=2000"):
        parse(PortLow="3000", PortHigh="2000")
    with pytest.raises(OptionError, match="go together"):
        parse(PortLow="3000")


@pytest.mark.parametrize("raw, message", [
    ({"Group": "239.1.1.1"}, None),  # VxlanId missing
    ({"VxlanId": "1", "Group": "239.1.1.1", "Peers": "192.0.2.1", "VtepDev": "e"},
     "exclude each other"),
    ({"VxlanId": "1", "Group": "239.1.1.1"}, "needs a VTEP device"),
    ({"VxlanId": "1", "NoAge": "true", "Age": "5"}, "NoAge and Age"),
    ({"VxlanId": "1", "SrcAddr": "192.0.2.1", "Peers": "2001:db8::2"}, "not a mix"),
])
def test_combinations(raw, message):
    with pytest.raises(OptionError, match=message or "VxlanId is required"):
        parse_options(raw)


def test_daemon_vtepdev_wins_and_satisfies_group():
    options = parse_options({"VxlanId": "1", "VtepDev": "eth1", "Group": "239.1.1.1"},
                            vtepdev="eth0")
    assert "dev eth0" in " ".join(options.ip_args("vxlan"))
    assert "eth1" not in " ".join(options.ip_args("vxlan"))


def test_defaults_and_order():
    options = parse(VxlanId="42")
    assert options.ip_args("vxlan") == ["id", "42", "dstport", "4789"]
    assert options.ip_args("link") == []
    assert options.link_name("0123456789abcdef") == "vx_0123456789ab"


def test_peers_are_normalised_and_deduplicated():
    options = parse(Peers="192.0.2.2, 192.0.2.3,192.0.2.2")
    assert options.peers == ("192.0.2.2", "192.0.2.3")


def test_non_string_values_are_refused():
    with pytest.raises(OptionError, match="is not a string"):
        parse_options({"VxlanId": 42})
    with pytest.raises(OptionError, match="must be a map"):
        parse_options(["VxlanId"])


def test_long_values_are_cut_in_messages():
    with pytest.raises(OptionError) as raised:
        parse(TTL="9" * 5000)
    assert len(str(raised.value)) < 300


def test_readme_option_list_is_the_table():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    assert options_table_markdown() in readme, "run `docker-vxlan-plugin options` and paste it"
    for option in OPTIONS:
        assert re.search(rf"`{re.escape(option.name)}`", readme)
