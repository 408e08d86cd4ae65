"""The driver's decisions, with a recording command runner in place of ip:
which commands each RPC runs, in what order, and what it answers."""

import gevent
import pytest

from tests.unit.conftest import EP1, EP2, ETH0, NET, NET2, FakeDocker, RecordingIp
from vxlan import recovery
from vxlan.driver import Driver
from vxlan.errors import CommandError, DockerLookupError, OptionError, PluginError
from vxlan.state import StateStore

def create(driver, network_id=NET, **options):
    driver.create_network(network_id, {"com.docker.network.generic": {"VxlanId": "42", **options}},
                          [{"Pool": "10.0.0.0/24", "Gateway": "10.0.0.254/24"}], [])


def test_create_network_runs_nothing_that_changes_the_host(driver, ip):
    create(driver)
    assert ip.commands == []  # it only read the links (RecordingIp.links)
    assert driver.networks[NET].options.get("VxlanId") == 42


def test_first_join_creates_vxlan_then_macvlan(driver, ip):
    create(driver, Peers="192.0.2.7")
    answer = driver.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24", "MacAddress": ""})
    assert answer == {"Interface": {"MacAddress": "02:42:0a:00:00:05"}}
    ip.commands.clear()
    joined = driver.join(NET, EP1)
    assert joined == {"InterfaceName": {"SrcName": "macvlan_1111111", "DstPrefix": "eth"},
                      "Gateway": "10.0.0.254"}
    assert ip.commands == [
        "ip link add vx_aaaaaaaaaaaa type vxlan id 42 dev eth0 dstport 4789",
        f"ip link set dev vx_aaaaaaaaaaaa alias docker-vxlan-plugin:{NET} up",
        "bridge fdb append 00:00:00:00:00:00 dev vx_aaaaaaaaaaaa dst 192.0.2.7",
        "ip link add macvlan_1111111 link vx_aaaaaaaaaaaa address 02:42:0a:00:00:05 "
        "type macvlan mode bridge"]


def test_second_join_creates_only_a_macvlan(driver, ip):
    create(driver)
    for endpoint in (EP1, EP2):
        driver.create_endpoint(NET, endpoint, {"Address": "", "MacAddress": "02:00:00:00:00:0" +
                                               endpoint[0]})
    driver.join(NET, EP1)
    ip.commands.clear()
    driver.join(NET, EP2)
    assert ip.commands == ["ip link add macvlan_2222222 link vx_aaaaaaaaaaaa "
                           "address 02:00:00:00:00:02 type macvlan mode bridge"]


def test_vxlan_goes_with_the_last_endpoint_without_linger(driver, ip):
    create(driver)
    for endpoint in (EP1, EP2):
        driver.create_endpoint(NET, endpoint, {"Address": "10.0.0." + endpoint[0] + "/24"})
        driver.join(NET, endpoint)
    ip.commands.clear()
    driver.delete_endpoint(NET, EP1)
    assert ip.commands == ["ip link delete dev macvlan_1111111"]
    driver.delete_endpoint(NET, EP2)
    assert ip.commands[1:] == ["ip link delete dev macvlan_2222222",
                               "ip link delete dev vx_aaaaaaaaaaaa"]
    ip.commands.clear()
    driver.delete_network(NET)
    assert ip.commands == []  # the vxlan is already gone


LINGER = 0.2  # seconds; the tests wait for it with gevent.sleep, which runs the timers


@pytest.fixture
def lingering(ip, tmp_path):
    """A driver whose vxlans outlive their last endpoint by LINGER seconds, with
    network NET and endpoint EP1 joined."""
    made = Driver(ip, FakeDocker(), StateStore(str(tmp_path)), vtepdev="eth0",
                  vxlan_linger=LINGER)
    create(made)
    made.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24"})
    made.join(NET, EP1)
    ip.commands.clear()
    yield made
    for timer in made.idle_vxlans.values():
        timer.kill()


def test_vxlan_outlives_its_last_endpoint_then_goes_with_its_cause(lingering, ip):
    lingering.delete_endpoint(NET, EP1)
    assert ip.commands == ["ip link delete dev macvlan_1111111"]
    assert NET in lingering.vxlans_here
    gevent.sleep(LINGER * 3)
    assert ip.commands[1:] == ["ip link delete dev vx_aaaaaaaaaaaa"]
    assert "--vxlan-linger" in ip.causes["ip link delete dev vx_aaaaaaaaaaaa"]
    assert NET not in lingering.vxlans_here and not lingering.idle_vxlans


def test_join_while_the_vxlan_lingers_keeps_it(lingering, ip):
    lingering.delete_endpoint(NET, EP1)
    lingering.create_endpoint(NET, EP2, {"Address": "10.0.0.6/24"})
    lingering.join(NET, EP2)
    gevent.sleep(LINGER * 3)
    assert ip.commands == ["ip link delete dev macvlan_1111111",
                           "ip link add macvlan_2222222 link vx_aaaaaaaaaaaa "
                           "address 02:42:0a:00:00:06 type macvlan mode bridge"]
    assert NET in lingering.vxlans_here


def test_delete_network_while_the_vxlan_lingers_deletes_it_once(lingering, ip):
    lingering.delete_endpoint(NET, EP1)
    lingering.delete_network(NET)
    gevent.sleep(LINGER * 3)
    assert ip.commands == ["ip link delete dev macvlan_1111111",
                           "ip link delete dev vx_aaaaaaaaaaaa"]
    assert "ip link delete dev vx_aaaaaaaaaaaa" not in ip.causes  # DeleteNetwork's own


def test_docker_mac_is_kept_and_not_answered(driver):
    create(driver)
    assert driver.create_endpoint(NET, EP1, {"MacAddress": "02:aa:bb:cc:dd:ee"}) == {}
    assert driver.endpoints[EP1].mac == "02:aa:bb:cc:dd:ee"


def test_mac_without_ipv4_is_stable_and_locally_administered(driver):
    create(driver)
    first = driver.create_endpoint(NET, EP1, {"AddressIPv6": "2001:db8::5/64"})
    again = driver.create_endpoint(NET, EP1, {"AddressIPv6": "2001:db8::5/64"})
    mac = first["Interface"]["MacAddress"]
    assert mac == again["Interface"]["MacAddress"]
    assert int(mac[:2], 16) & 0b11 == 0b10  # unicast, locally administered


def test_failed_join_undoes_the_new_vxlan(driver, ip):
    create(driver)
    driver.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24"})
    ip.fail_on = "macvlan_1111111"
    with pytest.raises(CommandError):
        driver.join(NET, EP1)
    assert ip.commands[-1] == "ip link delete dev vx_aaaaaaaaaaaa"
    assert "vx_aaaaaaaaaaaa" not in ip.existing
    assert NET not in driver.vxlans_here


def test_ipv6_gateway_and_internal_networks(driver):
    driver.create_network(NET, {"com.docker.network.generic": {"VxlanId": "1"}},
                          [{"Gateway": "10.0.0.1/24"}], [{"Gateway": "2001:db8::1/64"}])
    driver.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24"})
    assert driver.join(NET, EP1)["GatewayIPv6"] == "2001:db8::1"
    driver.create_network(NET2, {"com.docker.network.generic": {"VxlanId": "2"},
                                 "com.docker.network.internal": True},
                          [{"Gateway": "10.1.0.1/24"}], [])
    driver.create_endpoint(NET2, EP2, {"Address": "10.1.0.5/24"})
    assert "Gateway" not in driver.join(NET2, EP2)


def test_unknown_network_is_asked_of_docker_once(ip, tmp_path):
    docker = FakeDocker({NET: {"Options": {"VxlanId": "77"}, "Internal": False,
                               "IPAM": {"Config": [{"Subnet": "10.7.0.0/24",
                                                    "Gateway": "10.7.0.1"}]}}})
    driver = Driver(ip, docker, StateStore(str(tmp_path)), scope="global", vtepdev="eth0")
    driver.create_endpoint(NET, EP1, {"Address": "10.7.0.5/24"})
    assert driver.join(NET, EP1)["Gateway"] == "10.7.0.1"
    assert docker.asked == [NET]
    with pytest.raises(DockerLookupError, match="does not know network"):
        driver.create_endpoint(NET2, EP2, {})


def test_state_survives_a_restart(driver, ip, tmp_path):
    create(driver, vxlanName="vxkept")
    driver.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24"})
    driver.join(NET, EP1)
    vxlan = {"ifname": "vxkept", "ifalias": "docker-vxlan-plugin:" + NET,
             "linkinfo": {"info_kind": "vxlan", "info_data": {"id": 42}}}
    restarted_ip = RecordingIp([ETH0, vxlan])
    again = Driver(restarted_ip, FakeDocker(), StateStore(str(tmp_path)), vtepdev="eth0",
                   vxlan_linger=0)
    recovery.load(again)
    assert again.networks[NET].link == "vxkept"
    assert again.endpoints[EP1].mac == "02:42:0a:00:00:05"
    assert NET in again.vxlans_here
    again.delete_endpoint(NET, EP1)
    assert restarted_ip.commands[-2:] == ["ip link delete dev macvlan_1111111",
                                          "ip link delete dev vxkept"]


def test_go_original_vxlan_is_adopted(ip, tmp_path):
    first = Driver(ip, FakeDocker(), StateStore(str(tmp_path)), vtepdev="eth0")
    create(first)
    original = {"ifname": "vx_aaaaaaaaaaaa",
                "linkinfo": {"info_kind": "vxlan", "info_data": {"id": 42}}}
    restarted_ip = RecordingIp([ETH0, original])
    again = Driver(restarted_ip, FakeDocker(), StateStore(str(tmp_path)), vtepdev="eth0")
    recovery.load(again)
    assert restarted_ip.commands[-1] == (
        f"ip link set dev vx_aaaaaaaaaaaa alias docker-vxlan-plugin:{NET} up")
    assert NET in again.vxlans_here


def test_conflicts_are_refused_before_anything_runs(driver, ip):
    create(driver)
    with pytest.raises(OptionError, match="already used by network aaaaaaaaaaaa"):
        create(driver, NET2)
    with pytest.raises(OptionError, match="vxlanName=vx_aaaaaaaaaaaa: already used"):
        create(driver, NET2, VxlanId="43", vxlanName="vx_aaaaaaaaaaaa")
    assert NET2 not in driver.networks


def test_join_of_unknown_endpoint_is_an_error(driver):
    create(driver)
    with pytest.raises(PluginError, match="endpoint 111111111111 is unknown"):
        driver.join(NET, EP1)


def test_allocate_network_echoes_options_after_checking_them(driver):
    options = {"VxlanId": "5", "Group": "239.1.1.5", "com.docker.network.foo": "x"}
    assert driver.allocate_network(NET, options) == {"Options": options}
    with pytest.raises(OptionError):
        driver.allocate_network(NET, {"VxlanId": "big"})


class DockerView:
    """Docker's answer to 'which endpoints does this network have here'."""

    def __init__(self, endpoints_by_network):
        self.endpoints_by_network = endpoints_by_network

    def endpoints_of(self, network_id):
        return self.endpoints_by_network.get(network_id)


def test_reconcile_forgets_only_what_docker_dropped_before_this_start(driver, ip):
    create(driver)
    create(driver, NET2, VxlanId="43")
    driver.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24"})
    driver.join(NET, EP1)
    from_before = (set(driver.networks), set(driver.endpoints))
    # an endpoint made after start: Docker may not have stored it yet
    driver.create_endpoint(NET, EP2, {"Address": "10.0.0.6/24"})
    ip.commands.clear()
    removed = recovery.forget_what_docker_forgot(driver, DockerView({NET: set()}), *from_before)
    assert sorted(removed) == sorted([NET2, EP1])  # NET2 unknown to Docker; EP1 left NET
    assert set(driver.endpoints) == {EP2} and set(driver.networks) == {NET}
    assert ip.commands == ["ip link delete dev macvlan_1111111"]  # EP2 keeps the vxlan
