"""The vxlan outlives a network's last container on a host (--vxlan-linger), on a
real Docker engine: `docker run --rm` after `docker run --rm` uses one vxlan,
`docker network rm` deletes it at once, and a plugin restarted while it lingers
does not leak it."""

import signal

import pytest

from demo import plugin_links  # scripts/demo.py
from lab import IMAGE  # scripts/lab.py
from tests.wait import wait_for


@pytest.fixture
def host(lab1):
    """The lab host; afterwards its vxlan networks are removed and the plugin stopped."""
    host = lab1.hosts[0]
    try:
        yield host
    finally:
        if not host.plugin_running():
            host.start_plugin(["--vtepdev", "eth0"])  # Docker needs it to remove a network
        networks = host.docker("network", "ls", "-q", "--filter", "driver=vxlan").stdout.split()
        if networks:
            host.docker("network", "rm", *networks, check=False)
        host.stop_plugin()


def create_network(host, vni):
    return host.docker("network", "create", "-d", "vxlan", "-o", f"VxlanId={vni}",
                       "--subnet", f"10.{vni}.0.0/24", f"linger{vni}").stdout.strip()


def records(host, command):
    return [r for r in host.audit_records() if r["cmd"] == command]


def test_containers_one_after_the_other_use_one_vxlan_until_network_rm(host):
    host.start_plugin(["--vtepdev", "eth0"])  # the default: 60 s
    network_id = create_network(host, 80)
    vxlan = "vx_" + network_id[:12]
    for _ in range(3):
        host.docker("run", "--rm", "--net", "linger80", IMAGE, "true")
        assert plugin_links(host) == [vxlan]  # the container's macvlan went with it
    assert [r["rpc"] for r in host.audit_records() if r["event"] == "result"
            and r["cmd"].startswith(f"ip link add {vxlan} ")] == ["Join"]

    host.docker("network", "rm", "linger80")
    assert plugin_links(host) == []
    assert [r["rpc"] for r in records(host, f"ip link delete dev {vxlan}")] == \
        ["DeleteNetwork", "DeleteNetwork"]  # run, result


def test_a_plugin_restarted_while_the_vxlan_lingers_still_deletes_it(host):
    flags = ["--vtepdev", "eth0", "--vxlan-linger", "5"]
    host.start_plugin(flags)
    network_id = create_network(host, 81)
    vxlan = "vx_" + network_id[:12]
    host.docker("run", "--rm", "--net", "linger81", IMAGE, "true")
    host.stop_plugin(signal.SIGKILL)  # within the 5 s: its timer dies with it
    assert plugin_links(host) == [vxlan]

    host.start_plugin(flags)
    wait_for(lambda: plugin_links(host) == [], 60, f"{vxlan} to be deleted after the restart")
    deletion = f"ip link delete dev {vxlan}"
    wait_for(lambda: len(records(host, deletion)) == 2, 10, "the deletion in the command log")
    run, result = records(host, deletion)
    assert result["status"] == "ok" and run["cause"] and "rpc" not in run
    # and the network still works: the next container makes the vxlan anew
    host.docker("run", "--rm", "--net", "linger81", IMAGE, "true")
    assert plugin_links(host) == [vxlan]
