"""After Join the plugin announces the container's addresses through the vxlan:
a VTEP on the other side (the peer namespace, with a vxlan of the same VNI and
addresses of its own on it) relearns where the container's MAC is, and replaces
the stale ARP and ND entries it held for the container's addresses."""

import errno
import json
import os
import subprocess
import sys
import time

import pytest

import lab  # scripts/lab.py
from tests.kernel.conftest import REPO, Plugin, join, network_request, new_id, sh
from tests.rpc import endpoint_request
from tests.wait import wait_for
from vxlan.rawsocket import send
from vxlan.packets import announcement

VNI = "61"
ADDRESS, ADDRESS6 = "10.42.0.2", "fd42::2"
MAC = "02:42:0a:2a:00:02"  # chosen from ADDRESS
OLD_MAC = "02:00:00:00:00:99"  # where the peer believes the addresses are
OLD_VTEP = "192.0.2.77"  # ... and behind which VTEP

CAPTURE = """
import socket, sys, time
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # every protocol
sock.bind((sys.argv[1], 0))
sock.settimeout(0.2)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        print(sock.recv(2000).hex(), flush=True)
    except socket.timeout:
        pass
"""


@pytest.fixture
def far_vtep(netns):
    """The peer namespace as another host: a vxlan of VNI 61 that reaches the
    plugin's namespace, 10.42.0.9 and fd42::9 on it, and stale entries for
    the container's addresses (its old MAC, behind another VTEP)."""
    peer = ["ip", "-n", netns.peer]
    sh(*peer, "link", "add", "vxfar", "type", "vxlan", "id", VNI, "dev", "eth0",
       "dstport", "4789", "remote", "192.0.2.1")
    sh(*peer, "addr", "add", "10.42.0.9/24", "dev", "vxfar")
    sh(*peer, "addr", "add", "fd42::9/64", "dev", "vxfar", "nodad")
    sh(*peer, "link", "set", "vxfar", "up")
    for address in (ADDRESS, ADDRESS6):
        sh(*peer, "neigh", "replace", address, "lladdr", OLD_MAC, "dev", "vxfar",
           "nud", "reachable")
    sh("bridge", "-n", netns.peer, "fdb", "add", MAC, "dev", "vxfar", "dst", OLD_VTEP,
       "dynamic")
    return "vxfar"


def neighbour(netns, address):
    """The MAC the peer namespace holds for ADDRESS."""
    found = json.loads(sh("ip", "-n", netns.peer, "-j", "neigh", "show", address,
                          "dev", "vxfar").stdout)
    return found[0].get("lladdr") if found else None


def vtep_of(netns, mac):
    """The VTEP the peer's vxlan sends MAC's frames to."""
    fdb = json.loads(sh("bridge", "-n", netns.peer, "-j", "fdb", "show", "dev", "vxfar").stdout)
    return next((entry.get("dst") for entry in fdb if entry["mac"] == mac), None)


def create_endpoint(plugin, address=ADDRESS, address6=ADDRESS6):
    """A network of VNI 61 whose Peer is the far VTEP, and an endpoint on it
    with these addresses: (network ID, endpoint ID, CreateEndpoint's answer)."""
    network_id, endpoint_id = new_id(), new_id()
    plugin.ok("CreateNetwork", network_request(network_id, {"VxlanId": VNI,
                                                            "Peers": "192.0.2.2"}))
    body = endpoint_request(network_id, endpoint_id, address and address + "/24")
    body["Interface"]["AddressIPv6"] = address6 and address6 + "/64"
    return network_id, endpoint_id, plugin.ok("CreateEndpoint", body)


def create_and_join_dual_stack(plugin):
    network_id, endpoint_id, answer = create_endpoint(plugin)
    assert answer == {"Interface": {"MacAddress": MAC}}
    join(plugin, network_id, endpoint_id)
    return network_id, endpoint_id


def announcements(plugin):
    return [r for r in plugin.audit() if r["cmd"].startswith("announce ")]


def test_join_announces_addresses_to_the_far_vtep_and_neighbours(plugin, netns, far_vtep):
    capture = subprocess.Popen(["ip", "netns", "exec", netns.peer, sys.executable, "-c",
                                CAPTURE, far_vtep, "4"], stdout=subprocess.PIPE, text=True)
    try:
        assert capture.stdout.readline().strip() == "ready"
        network_id, endpoint_id = create_and_join_dual_stack(plugin)
        wait_for(lambda: neighbour(netns, ADDRESS) == MAC, what="the ARP entry to change")
        wait_for(lambda: neighbour(netns, ADDRESS6) == MAC, what="the ND entry to change")
        assert vtep_of(netns, MAC) == "192.0.2.1"
        frames, _ = capture.communicate(timeout=15)
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.wait()
    sent = [bytes.fromhex(line) for line in frames.split() if line[12:24] == MAC.replace(":", "")]
    arp = [f for f in sent if f[12:14] == b"\x08\x06"]
    na = [f for f in sent if f[12:14] == b"\x86\xdd" and f[54] == 136]
    assert (len(arp), len(na)) == (3, 3)  # each address, three times

    vxlan = "vx_" + network_id[:12]
    line = (f"announce {ADDRESS} {ADDRESS6} from {MAC} on {vxlan} "
            "(gratuitous ARP, unsolicited NA; 3 times in 1 s)")
    run, result = wait_for(lambda: len(announcements(plugin)) == 2 and announcements(plugin),
                           what="the announcement's result in the command log")
    assert (run["event"], run["cmd"], result["event"], result["cmd"]) == (
        "run", line, "result", line)
    assert result["status"] == "ok" and result["duration_ms"] >= 1000
    for record in (run, result):
        assert record["network"] == network_id and record["endpoint"] == endpoint_id
        assert record["cause"].startswith("after Join") and "rpc" not in record
    assert f"run {line} [network={network_id[:12]} endpoint={endpoint_id[:12]} " \
           "cause: after Join" in plugin.log()


def packet_sockets(pid):
    """Inodes of the packet sockets (AF_PACKET) that process PID holds open."""
    with open(f"/proc/{pid}/net/packet") as table:  # its network namespace's
        in_namespace = {line.split()[-1] for line in table.readlines()[1:]}
    held = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    return {inode for inode in in_namespace if f"socket:[{inode}]" in held}


def test_every_announcement_is_sent_on_one_packet_socket_kept_open(plugin, netns, far_vtep):
    """Closing a packet socket waits for an RCU grace period (8-16 ms on the
    benchmark machine) during which the plugin's event loop, and every request,
    stands still: three closes per Join made RPCs that came within a second of
    a Join wait. The plugin opens one socket for sending and keeps it."""
    network_id, endpoint_id = create_and_join_dual_stack(plugin)
    wait_for(lambda: len(announcements(plugin)) == 2, what="the first announcement to end")
    first = packet_sockets(plugin.process.pid)
    second = new_id()
    plugin.ok("CreateEndpoint", endpoint_request(network_id, second, "10.42.0.3/24"))
    join(plugin, network_id, second)
    wait_for(lambda: len(announcements(plugin)) == 4, what="the second announcement to end")
    assert announcements(plugin)[-1]["status"] == "ok"
    assert len(first) == 1 and packet_sockets(plugin.process.pid) == first


def test_no_announce_sends_nothing(netns, workdir, far_vtep):
    plugin = Plugin(netns, workdir, ["--vtepdev", "eth0", "--no-announce"]).start()
    try:
        network_id, _ = create_and_join_dual_stack(plugin)
        time.sleep(1.5)  # longer than announcements take: they would have been seen
        assert neighbour(netns, ADDRESS) == neighbour(netns, ADDRESS6) == OLD_MAC
        assert vtep_of(netns, MAC) == OLD_VTEP
        assert announcements(plugin) == []
    finally:
        plugin.stop()


def test_sending_on_a_missing_device_is_an_error():
    with pytest.raises(OSError) as raised:
        send("dvk-nosuch", [announcement(MAC, ADDRESS)])
    assert raised.value.errno == errno.ENODEV


def without_net_raw(netns, workdir, *flags):
    """The plugin started in NETNS without CAP_NET_RAW (dropped from the bounding
    set, so root's exec does not get it)."""
    return subprocess.Popen(
        ["ip", "netns", "exec", netns.name, "setpriv", "--bounding-set", "-net_raw",
         sys.executable, "-m", "vxlan", "--socket", f"{workdir}/vxlan.sock",
         "--state-dir", f"{workdir}/state", "--vtepdev", "eth0", *flags],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def test_without_cap_net_raw_the_plugin_says_so_unless_told_not_to_announce(netns, workdir):
    refused = without_net_raw(netns, workdir)
    _, stderr = refused.communicate(timeout=30)
    assert refused.returncode == 1
    assert stderr.strip().endswith(
        "docker-vxlan-plugin: announcing and probing addresses need a packet socket "
        "(AF_PACKET, CAP_NET_RAW), and opening one failed: Operation not permitted; allow it, "
        "or start without them (--no-announce, no --probe-duplicates)")
    served = without_net_raw(netns, workdir, "--no-announce")
    try:
        wait_for(lambda: served.poll() is not None or lab.connects(f"{workdir}/vxlan.sock"),
                 seconds=20, what="the plugin's socket")
        assert served.poll() is None, served.communicate()
    finally:
        lab.stop_popen(served)


# --- the duplicate probe (--probe-duplicates) -------------------------------------------

@pytest.fixture
def probing(netns, workdir):
    plugin = Plugin(netns, workdir, ["--vtepdev", "eth0", "--probe-duplicates", "0.3",
                                     "--vxlan-linger", "0"]).start()
    try:
        yield plugin
    finally:
        plugin.stop()


@pytest.mark.parametrize("address, address6, held", [
    ("10.42.0.9", "", "10.42.0.9"),
    ("10.42.0.3", "fd42::9", "fd42::9"),
], ids=["ipv4", "ipv6"])
def test_an_address_another_host_answers_for_fails_the_join(probing, netns, far_vtep,
                                                            address, address6, held):
    far_mac = json.loads(sh("ip", "-n", netns.peer, "-j", "link", "show", far_vtep).stdout)[0][
        "address"]
    network_id, endpoint_id, _ = create_endpoint(probing, address, address6)
    status, answer = probing.call("Join", {"NetworkID": network_id, "EndpointID": endpoint_id})
    assert status == 500
    assert answer["Err"].startswith(
        f"address {held} is already in use on this VXLAN: {far_mac} answered for it, "
        "behind VTEP 192.0.2.2; give the hosts disjoint --ip-range slices")
    assert netns.link_names() == {"lo", "eth0"}  # the Join's links are gone
    [result] = [r for r in probing.audit() if r["event"] == "result"
                and r["cmd"].startswith("probe ")]
    assert result["rpc"] == "Join" and result["status"] == "failed"
    assert f"{held} is held by {far_mac}" in result["stderr"]
    # Docker deletes the endpoint of a failed Join: nothing left to do, no error
    probing.delete_endpoint(network_id, endpoint_id)


def test_a_free_address_joins_after_the_probe(probing, netns, far_vtep):
    network_id, endpoint_id, _ = create_endpoint(probing)
    join(probing, network_id, endpoint_id)
    vxlan = "vx_" + network_id[:12]
    vxlan_mac = netns.link(vxlan)["address"]
    [result] = [r for r in probing.audit() if r["event"] == "result"
                and r["cmd"].startswith("probe ")]
    assert result["cmd"] == (f"probe {ADDRESS} {ADDRESS6} from {vxlan_mac} on {vxlan} "
                             "(ARP probe, DAD solicitation; waits 0.3 s for an answer)")
    assert result["status"] == "ok" and result["duration_ms"] >= 300
    assert "macvlan_" + endpoint_id[:7] in netns.link_names()


SENDERS = """
from gevent import monkey; monkey.patch_all()
import socket, sys, gevent
from vxlan import rawsocket
from vxlan.packets import announcement
rawsocket._sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
rawsocket._sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # the kernel's least
frames = [announcement("02:42:0a:2a:00:%02x" % n, "10.42.0.%d" % n) for n in range(2, 12)]
gevent.joinall([gevent.spawn(rawsocket.send, "eth0", frames) for _ in range(20)],
               raise_error=True)
print("sent", flush=True)
"""


def test_announcements_of_many_joins_at_once_share_the_socket(netns):
    # Docker restarting 1,000 containers announces them all within a second.
    # A slow link (here a rate-limited queue) fills the socket's send buffer:
    # the greenlets then take turns waiting for it to drain.
    sh("tc", "-n", netns.name, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "1mbit",
       "burst", "1600", "latency", "5s")
    done = subprocess.run(["ip", "netns", "exec", netns.name, sys.executable, "-c", SENDERS],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "sent\n", done.stderr[-2000:]
