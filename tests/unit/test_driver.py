"""The driver's decisions, with a recording command runner in place of ip:
which commands each RPC runs, in what order, and what it answers."""

import os

import gevent
import pytest

from tests.unit.conftest import EP1, EP2, ETH0, NET, NET2, FakeDocker, RecordingIp, inspect
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
    driver.delete_endpoint(NET, EP1).wait()  # its links go after the answer
    assert ip.commands == ["ip link delete dev macvlan_1111111"]
    driver.delete_endpoint(NET, EP2).wait()
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
    lingering.delete_endpoint(NET, EP1).wait()
    assert ip.commands == ["ip link delete dev macvlan_1111111"]
    assert NET in lingering.vxlans_here
    gevent.sleep(LINGER * 3)
    assert ip.commands[1:] == ["ip link delete dev vx_aaaaaaaaaaaa"]
    assert "--vxlan-linger" in ip.causes["ip link delete dev vx_aaaaaaaaaaaa"]
    assert NET not in lingering.vxlans_here and not lingering.idle_vxlans


def test_join_while_the_vxlan_lingers_keeps_it(lingering, ip):
    lingering.delete_endpoint(NET, EP1).wait()
    lingering.create_endpoint(NET, EP2, {"Address": "10.0.0.6/24"})
    lingering.join(NET, EP2)
    gevent.sleep(LINGER * 3)
    assert ip.commands == ["ip link delete dev macvlan_1111111",
                           "ip link add macvlan_2222222 link vx_aaaaaaaaaaaa "
                           "address 02:42:0a:00:00:06 type macvlan mode bridge"]
    assert NET in lingering.vxlans_here


def test_delete_network_while_the_vxlan_lingers_deletes_it_once(lingering, ip):
    lingering.delete_endpoint(NET, EP1).wait()
    lingering.delete_network(NET)
    gevent.sleep(LINGER * 3)
    assert ip.commands == ["ip link delete dev macvlan_1111111",
                           "ip link delete dev vx_aaaaaaaaaaaa"]
    assert "ip link delete dev vx_aaaaaaaaaaaa" not in ip.causes  # DeleteNetwork's own


def test_docker_mac_is_kept_and_not_answered(driver):
    create(driver)
    assert driver.create_endpoint(NET, EP1, {"MacAddress": "02:aa:bb:cc:dd:ee"}) == {}
    assert driver.endpoints[EP1].mac == "02:aa:bb:cc:dd:ee"


def test_mac_without_ipv4_comes_from_the_ipv6_address(driver):
    # An IPv6-only network (engine 28, --ipv4=false): a restarted container
    # keeps its address but gets a new endpoint ID, as seen on engine 28.5.2.
    create(driver)
    first = driver.create_endpoint(NET, EP1, {"Address": "", "AddressIPv6": "fd44::2/64"})
    restarted = driver.create_endpoint(NET, EP2, {"Address": "", "AddressIPv6": "fd44::2/64"})
    mac = first["Interface"]["MacAddress"]
    assert restarted["Interface"]["MacAddress"] == mac
    assert int(mac[:2], 16) & 0b11 == 0b10  # unicast, locally administered
    # the whole address counts, not only the last 4 bytes as for IPv4
    other = driver.create_endpoint(NET, EP2, {"AddressIPv6": "fd44::1:0:0:2/64"})
    assert other["Interface"]["MacAddress"] != mac


def test_dual_stack_mac_comes_from_the_ipv4_address(driver):
    create(driver)
    answer = driver.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24",
                                               "AddressIPv6": "fd44::2/64"})
    assert answer == {"Interface": {"MacAddress": "02:42:0a:00:00:05"}}


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
    docker = FakeDocker({NET: inspect(NET, {"VxlanId": "77"}, gateway="10.7.0.1")})
    driver = Driver(ip, docker, StateStore(str(tmp_path)), scope="global", vtepdev="eth0")
    driver.create_endpoint(NET, EP1, {"Address": "10.7.0.5/24"})
    assert driver.join(NET, EP1)["Gateway"] == "10.7.0.1"
    assert docker.asked == [NET]
    with pytest.raises(PluginError, match="does not know network"):
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
    again.delete_endpoint(NET, EP1).wait()
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


SWARM_NET, SWARM_NET2 = "n1" + "x" * 23, "n2" + "y" * 23   # swarm's 25-character IDs


def test_allocate_network_refuses_a_vni_and_port_another_swarm_network_holds(ip, tmp_path):
    docker = FakeDocker({SWARM_NET: {}})
    driver = Driver(ip, docker, StateStore(str(tmp_path)), scope="global")
    driver.allocate_network(SWARM_NET, {"VxlanId": "46"})
    with pytest.raises(OptionError, match=f"VxlanId=46: already used by swarm network "
                                          f"{SWARM_NET} \\(with Port=4789\\)"):
        driver.allocate_network(SWARM_NET2, {"VxlanId": "0x2e"})
    # another port is another VXLAN; the network itself may be allocated again
    driver.allocate_network(SWARM_NET2, {"VxlanId": "46", "Port": "8472"})
    driver.allocate_network(SWARM_NET, {"VxlanId": "46"})
    assert ip.commands == []


def test_free_network_releases_the_vni_and_a_restart_keeps_the_allocations(ip, tmp_path):
    docker = FakeDocker({SWARM_NET: {}, SWARM_NET2: {}})
    driver = Driver(ip, docker, StateStore(str(tmp_path)), scope="global")
    driver.allocate_network(SWARM_NET, {"VxlanId": "46"})
    driver.allocate_network(SWARM_NET2, {"VxlanId": "47"})
    driver.free_network(SWARM_NET2)
    restarted = Driver(ip, docker, StateStore(str(tmp_path)), scope="global")
    with pytest.raises(OptionError, match="already used by swarm network"):
        restarted.allocate_network("n3" + "z" * 23, {"VxlanId": "46"})
    restarted.allocate_network("n3" + "z" * 23, {"VxlanId": "47"})


def test_an_allocation_is_dropped_only_when_docker_says_its_network_is_gone(ip, tmp_path):
    docker = FakeDocker({SWARM_NET: {}})
    driver = Driver(ip, docker, StateStore(str(tmp_path)), scope="global")
    driver.allocate_network(SWARM_NET, {"VxlanId": "46"})
    del docker.networks[SWARM_NET]          # removed while no FreeNetwork reached us
    driver.allocate_network(SWARM_NET2, {"VxlanId": "46"})
    assert docker.asked == [SWARM_NET]
    docker.networks[SWARM_NET2] = {}
    with pytest.raises(OptionError, match=f"already used by swarm network {SWARM_NET2}"):
        driver.allocate_network(SWARM_NET, {"VxlanId": "46"})


def test_an_allocation_in_the_way_stands_when_docker_does_not_answer(ip, tmp_path):
    class Silent(FakeDocker):
        def has_network(self, network_id):
            raise DockerLookupError("could not ask Docker about network n1xxxxxxxxxx: timed out")

    driver = Driver(ip, Silent(), StateStore(str(tmp_path)), scope="global")
    driver.allocate_network(SWARM_NET, {"VxlanId": "46"})
    with pytest.raises(DockerLookupError):
        driver.allocate_network(SWARM_NET2, {"VxlanId": "46"})
    driver.free_network(SWARM_NET)
    driver.allocate_network(SWARM_NET2, {"VxlanId": "46"})


def test_reconcile_forgets_only_what_docker_dropped_before_this_start(driver, ip):
    create(driver)
    create(driver, NET2, VxlanId="43")
    driver.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24"})
    driver.join(NET, EP1)
    endpoints_from_before = set(driver.endpoints)
    # an endpoint made after start: Docker may not have stored it yet
    driver.create_endpoint(NET, EP2, {"Address": "10.0.0.6/24"})
    ip.commands.clear()
    docker = FakeDocker({NET: inspect(NET, {"VxlanId": "42"})})
    removed = [removed for network_id in (NET, NET2) for removed in driver.learn_from_docker(
        network_id, docker.network(network_id), endpoints_from_before)]
    assert sorted(removed) == sorted([NET2, EP1])  # NET2 unknown to Docker; EP1 left NET
    assert set(driver.endpoints) == {EP2} and set(driver.networks) == {NET}
    assert ip.commands == ["ip link delete dev macvlan_1111111"]  # EP2 keeps the vxlan


def test_a_lost_record_is_made_again_from_dockers(ip, tmp_path):
    vxlan = {"ifname": "vx_aaaaaaaaaaaa", "ifalias": "docker-vxlan-plugin:" + NET,
             "linkinfo": {"info_kind": "vxlan", "info_data": {"id": 42, "port": 4789}}}
    ip.existing["vx_aaaaaaaaaaaa"] = vxlan
    docker = FakeDocker({NET: inspect(NET, {"VxlanId": "42"}, [(EP1, "02:42:0a:2a:00:01"),
                                                               (EP2, "02:42:0a:2a:00:02")])})
    driver = Driver(ip, docker, StateStore(str(tmp_path)), vtepdev="eth0")
    recovery.load(driver)  # an empty state
    assert driver.unconfirmed == {NET} and NET in driver.vxlans_here
    driver.learn_from_docker(NET, docker.network(NET))
    assert driver.networks[NET].gateway == "10.42.0.254"
    assert {e.id: e.mac for e in driver.endpoints_of(NET)} == {EP1: "02:42:0a:2a:00:01",
                                                               EP2: "02:42:0a:2a:00:02"}
    driver.delete_endpoint(NET, EP1).wait()
    assert ip.commands == ["ip link delete dev macvlan_1111111"]  # EP2 still uses the vxlan
    again = Driver(RecordingIp([ETH0, vxlan]), FakeDocker(), StateStore(str(tmp_path)))
    recovery.load(again)  # the rebuilt records were saved
    assert set(again.endpoints) == {EP2} and again.networks[NET].options.get("VxlanId") == 42


def test_without_dockers_word_a_vxlan_outlives_its_last_known_endpoint(ip, tmp_path):
    first = Driver(ip, FakeDocker(), StateStore(str(tmp_path)), vtepdev="eth0")
    create(first)
    for endpoint in (EP1, EP2):
        first.create_endpoint(NET, endpoint, {"Address": "10.0.0." + endpoint[0] + "/24"})
        first.join(NET, endpoint)
    ip.existing["vx_aaaaaaaaaaaa"] = {
        "ifname": "vx_aaaaaaaaaaaa", "ifalias": "docker-vxlan-plugin:" + NET,
        "linkinfo": {"info_kind": "vxlan", "info_data": {"id": 42, "port": 4789}}}
    os.unlink(tmp_path / "endpoints" / (EP2 + ".json"))
    (tmp_path / "endpoints" / (EP1 + ".json")).write_text("{cut sh")
    again = Driver(ip, FakeDocker(answering=False), StateStore(str(tmp_path)), vtepdev="eth0")
    recovery.load(again)
    ip.commands.clear()
    again.delete_endpoint(NET, EP1).wait()
    assert ip.commands == ["ip link delete dev macvlan_1111111"]
    assert again.remove_unused_links() == []  # nothing confirmed: nothing goes
    assert "vx_aaaaaaaaaaaa" in ip.existing


def test_options_from_docker_that_no_longer_validate_hold_the_network(ip, tmp_path):
    docker = FakeDocker({NET: inspect(NET, {"VxlanId": "42", "Group": "239.1.1.1"})})
    driver = Driver(ip, docker, StateStore(str(tmp_path)))  # no -vtepdev
    for _ in range(2):
        with pytest.raises(PluginError, match="network aaaaaaaaaaaa: option Group=239.1.1.1 "
                                              "needs a VTEP device"):
            driver.create_endpoint(NET, EP1, {"Address": "10.42.0.5/24"})
    assert docker.asked == [NET]  # held: not asked again
    assert driver.learn_from_docker(NET, docker.network(NET), {EP1}) == []
    assert ip.commands == [] and not os.listdir(tmp_path / "networks")


class RecordingAnnouncer:
    """Stands in for announce.Announcer: records what Join asked to announce."""

    def __init__(self):
        self.asked = []

    def announce(self, device, mac, addresses, still_wanted):
        self.asked.append((device, mac, addresses, still_wanted))


@pytest.fixture
def announcing(ip, tmp_path):
    """(driver, announcer): a driver that announces, with network NET created."""
    announcer = RecordingAnnouncer()
    driver = Driver(ip, FakeDocker(), StateStore(str(tmp_path)), vtepdev="eth0",
                    announcer=announcer)
    create(driver)
    return driver, announcer


def test_join_announces_the_endpoints_addresses_on_its_vxlan(announcing):
    driver, announcer = announcing
    driver.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24", "AddressIPv6": "fd00::5/64",
                                      "MacAddress": ""})
    assert announcer.asked == []  # not before Join: the macvlan does not exist yet
    driver.join(NET, EP1)
    [(device, mac, addresses, still_wanted)] = announcer.asked
    assert (device, mac, addresses) == ("vx_aaaaaaaaaaaa", "02:42:0a:00:00:05",
                                        ("10.0.0.5", "fd00::5"))
    assert still_wanted()
    driver.delete_endpoint(NET, EP1).wait()
    assert not still_wanted()  # a later round must not draw traffic to a gone endpoint


def test_an_endpoint_made_anew_stops_the_old_announcement(announcing):
    driver, announcer = announcing
    driver.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24"})
    driver.join(NET, EP1)
    driver.create_endpoint(NET, EP1, {"Address": "10.0.0.6/24"})
    assert not announcer.asked[0][3]()


def test_an_endpoint_without_addresses_is_not_announced(announcing):
    driver, announcer = announcing
    driver.create_endpoint(NET, EP1, {"Address": "", "AddressIPv6": "",
                                      "MacAddress": "02:00:00:00:00:01"})
    driver.join(NET, EP1)
    assert announcer.asked == []


def test_addresses_survive_a_restart_between_create_endpoint_and_join(driver, ip, tmp_path):
    create(driver)
    driver.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24", "AddressIPv6": "fd00::5/64"})
    again = Driver(ip, FakeDocker(), StateStore(str(tmp_path)), vtepdev="eth0")
    recovery.load(again)
    assert again.endpoints[EP1].addresses == ("10.0.0.5", "fd00::5")


def test_bad_ipv6_address_is_refused(driver):
    create(driver)
    with pytest.raises(PluginError, match="endpoint address 'fd00::zz/64' is not an IP address"):
        driver.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24", "AddressIPv6": "fd00::zz/64"})
    assert EP1 not in driver.endpoints


class AnsweringProbe:
    """Stands in for probe.DuplicateProbe: HOLDERS answer, and it records who asked."""

    def __init__(self, holders):
        self.holders_found, self.asked = holders, []

    def holders(self, device, addresses):
        self.asked.append((device, addresses))
        return self.holders_found


def test_an_address_held_elsewhere_fails_the_join_and_undoes_it(ip, tmp_path):
    prober = AnsweringProbe({"10.0.0.5": "02:42:0a:00:00:05"})
    driver = Driver(ip, FakeDocker(), StateStore(str(tmp_path)), vtepdev="eth0", prober=prober,
                    vxlan_linger=0)  # the vxlan goes with its only endpoint
    create(driver)
    driver.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24"})
    with pytest.raises(PluginError, match=r"^address 10.0.0.5 is already in use on this VXLAN: "
                       "02:42:0a:00:00:05 answered for it, behind a VTEP the vxlan did not "
                       "learn"):
        driver.join(NET, EP1)
    assert prober.asked == [("vx_aaaaaaaaaaaa", ("10.0.0.5",))]
    assert ip.commands[-3:] == ["bridge -j fdb show dev vx_aaaaaaaaaaaa",
                                "ip link delete dev macvlan_1111111",
                                "ip link delete dev vx_aaaaaaaaaaaa"]
    assert EP1 not in driver.endpoints and NET not in driver.vxlans_here


def test_no_probe_in_global_scope(ip, tmp_path):
    # swarm's IPAM hands out each address once for the whole cluster
    prober = AnsweringProbe({"10.0.0.5": "02:42:0a:00:00:05"})
    driver = Driver(ip, FakeDocker(), StateStore(str(tmp_path)), scope="global",
                    vtepdev="eth0", prober=prober)
    create(driver)
    driver.create_endpoint(NET, EP1, {"Address": "10.0.0.5/24"})
    driver.join(NET, EP1)
    assert prober.asked == []
