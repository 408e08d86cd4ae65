#!/usr/bin/env python3
"""Containers on several Docker hosts talk over one VXLAN, all on this machine.

The story of the Go original's tutorial, with the hosts of scripts/lab.py (a
network namespace and a dockerd each, on one switched underlay) in place of a
docker-machine cluster: the plugin runs on every host, each host creates the
same vxlan network (same VxlanId, its own slice of the subnet), runs one
container, and every container pings every other one.  Then it removes
everything, also after an error or Ctrl-C.

    python3 scripts/demo.py               # 3 hosts, multicast Group
    python3 scripts/demo.py --peers       # Peers: head-end replication, no multicast
    python3 scripts/demo.py --hosts 2
    python3 scripts/demo.py --engine sid  # Debian unstable's Docker Engine (28)

Needs root and what `scripts/install.sh --test` installs (stdlib only).  The
helpers below are also what tests/e2e/test_multihost.py uses.
"""

import argparse
import contextlib
import ipaddress
import re
import shlex
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402  (scripts/lab.py)

GROUP = "239.1.1.42"


def ip_range(host, subnet):
    """The host's own slice of subnet for --ip-range.  A local-scope network
    is allocated by each host's IPAM alone, so the hosts must not share a
    slice; the last slice is left to no host (the gateway lives there)."""
    net = ipaddress.ip_network(subnet)
    hosts = len(host.lab.hosts)
    slices = list(net.subnets(prefixlen_diff=hosts.bit_length()))  # more slices than hosts
    return str(slices[host.index - 1])


def gateway(subnet):
    """The subnet's last address: where the network's router would be."""
    return str(ipaddress.ip_network(subnet)[-2])


def peers_of(host, family=4):
    """The Peers option of host: every other host's underlay address (IPv4 or IPv6)."""
    return ",".join(h.underlay_ip if family == 4 else h.underlay_ip6
                    for h in host.lab.hosts if h is not host)


def docker(host, *args, echo=False, check=True):
    if echo:
        print(f"{host.name}$ docker {shlex.join(map(str, args))}", flush=True)
    return host.docker(*args, check=check)


@contextlib.contextmanager
def network(hosts, name, subnet, options, *args, split=True, echo=False):
    """Creates network NAME with driver vxlan on each host, options(host) as
    its -o options, and (split) the host's ip_range, and ARGS for docker
    network create (e.g. --ipv6 --subnet ...); on leaving, removes the network
    and every container on it from those hosts, whatever happened."""
    try:
        for host in hosts:
            create = ["network", "create", "-d", "vxlan"]
            for key, value in options(host).items():
                create += ["-o", f"{key}={value}"]
            create += ["--subnet", subnet, "--gateway", gateway(subnet)]
            if split:
                create += ["--ip-range", ip_range(host, subnet)]
            docker(host, *create, *args, name, echo=echo)
        yield
    finally:
        for host in hosts:
            remove_network(host, name, echo=echo, check=False)


def remove_network(host, name, *, echo=False, check=True):
    """Removes every container on network NAME, then the network."""
    containers = host.docker("ps", "-a", "--filter", f"network={name}", "--format",
                             "{{.Names}}", check=False).stdout.split()
    if containers:
        docker(host, "rm", "-f", *containers, echo=echo, check=check)
    docker(host, "network", "rm", name, echo=echo, check=check)


def run_container(host, name, net, *args, echo=False):
    """Starts a busybox container on net (args go to docker run, e.g. --ip)
    and returns its address there."""
    docker(host, "run", "-d", "--name", name, "--net", net, *args, lablib.IMAGE,
           "sleep", "1d", echo=echo)
    return network_field(host, name, net)


def network_field(host, container, net, field="IPAddress"):
    """A field of container's endpoint on net, e.g. IPAddress or EndpointID."""
    return host.docker("inspect", "-f",
                       f'{{{{(index .NetworkSettings.Networks "{net}").{field}}}}}',
                       container).stdout.strip()


def ping(host, container, address, count=1):
    """Pings address from inside container (busybox ping); the finished command."""
    return host.docker("exec", container, "ping", "-c", count, "-W", 2, address,
                       check=False)


def plugin_links(host):
    """Names of the links the plugin makes (vx_..., macvlan_...) on host, once
    those it has started to delete are gone: it deletes a container's links
    just after answering `docker rm` (up to 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        names = sorted(link["ifname"] for link in host.links()
                       if link["ifname"].startswith(("vx_", "macvlan_")))
        if not set(names) & being_deleted(host) or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


def being_deleted(host):
    """Links whose last command in the plugin's log is their deletion."""
    last = {}
    for record in host.audit_records():
        words = record.get("cmd", "").split() if record.get("event") == "run" else []
        if words[:3] == ["ip", "link", "add"]:
            last[words[3]] = "add"
        elif words[:4] == ["ip", "link", "delete", "dev"]:
            last[words[4]] = "delete"
    return {name for name, what in last.items() if what == "delete"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=3, help="how many hosts (default 3)")
    parser.add_argument("--peers", action="store_true",
                        help="Peers (the other hosts' addresses) instead of a multicast Group")
    parser.add_argument("--vni", type=int, default=42, help="the VxlanId (default 42)")
    parser.add_argument("--engine", metavar="RELEASE",
                        help="the docker.io of this Debian release (trixie: Engine 26, "
                             "sid: 28) instead of the machine's; see scripts/lab.py")
    args = parser.parse_args(argv)
    if not 2 <= args.hosts <= 20:
        parser.error("--hosts: 2 to 20")
    # a plain `kill` tears the lab down too (SystemExit runs the with-blocks)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    net, subnet = f"vxlan{args.vni}", f"10.{args.vni % 256}.0.0/24"
    if args.peers:
        options = lambda host: {"VxlanId": args.vni, "Peers": peers_of(host)}  # noqa: E731
    else:
        options = lambda host: {"VxlanId": args.vni, "Group": GROUP}  # noqa: E731
    failed = 0
    try:
        with lablib.Lab(args.hosts, engine=args.engine) as lab:
            engine = f" (Engine {lab.hosts[0].server_version})" if args.engine else ""
            print(f"lab {lab.prefix}: {args.hosts} Docker hosts{engine} on one underlay "
                  f"(eth0: {', '.join(f'{h.name} {h.underlay_ip}' for h in lab.hosts)})")
            for host in lab.hosts:
                plugin = host.start_plugin(["--vtepdev", "eth0"])
                print(f"{host.name}: docker-vxlan-plugin running (pid {plugin.pid})")
            containers = []
            with network(lab.hosts, net, subnet, options, echo=True):
                for host in lab.hosts:
                    name = f"c{host.index}"
                    address = run_container(host, name, net, echo=True)
                    print(f"    {name} on {host.name} has {address}")
                    containers.append((host, name, address))
                print("pings, each container to every other:")
                for host, name, _ in containers:
                    for other_host, other, address in containers:
                        if other_host is host:
                            continue
                        res = ping(host, name, address)
                        rtt = re.search(r"time=(\S+ ms)", res.stdout)
                        result = f"ok, {rtt.group(1)}" if res.returncode == 0 and rtt else \
                            "FAILED\n" + (res.stdout + res.stderr).strip()
                        failed += res.returncode != 0
                        print(f"  {name} on {host.name} -> {other} on {other_host.name} "
                              f"({address}): {result}", flush=True)
                print("removing the containers and the network:")
            for host in lab.hosts:
                print(f"{host.name}: plugin links left: {', '.join(plugin_links(host)) or 'none'}")
            first = lab.hosts[0]
            print(f"what the plugin changed on {first.name} (from its command log):")
            for record in first.audit_records():
                if record.get("event") == "result" and "show" not in record["cmd"].split():
                    # an announcement has no RPC (Join had answered): its cause says why
                    why = record.get("rpc") or record.get("cause")
                    print(f"  {why}: {record['cmd']}  ({record['status']})")
            prefix = lab.prefix
        print(f"lab {prefix} down: namespaces, daemons and files removed")
    except KeyboardInterrupt:
        print("interrupted: the lab was removed", file=sys.stderr)
        return 130
    print(f"{failed} of {args.hosts * (args.hosts - 1)} pings failed" if failed
          else "every container reached every other one")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
