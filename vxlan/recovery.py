"""Start-up: load what the plugin remembers, find its links on the host, and
clean up what a crash or an outage left behind.

`load` runs before the socket opens and needs only the state and the kernel.
`reconcile` runs after, in the background, because it asks Docker, and Docker
may itself be starting and waiting for this plugin. It removes only links the
plugin provably owns (marked with its alias) that nobody uses, and logs each
removal in the command log like every other command.
"""

import logging

import gevent

from . import commands as cmd
from .driver import Endpoint, is_network_link
from .errors import DockerLookupError, OptionError, PluginError

log = logging.getLogger("vxlan.recovery")


def load(driver):
    """Reads the state and finds which of our vxlans exist on this host."""
    for network_id, record in driver.state.load_all("networks").items():
        try:
            driver.networks[network_id] = driver.network_from_record(record)
        except (OptionError, PluginError, KeyError, TypeError) as error:
            log.error("ignoring network %s in the state: %s", network_id[:12], error)
    for endpoint_id, record in driver.state.load_all("endpoints").items():
        try:
            driver.endpoints[endpoint_id] = Endpoint(endpoint_id, record["network"],
                                                     record["mac"])
        except (KeyError, TypeError) as error:
            log.error("ignoring endpoint %s in the state: %s", endpoint_id[:12], error)
    for link in driver.ip.links("vxlan"):
        network = _network_of(driver, link)
        if network is None:
            continue
        if cmd.owner_of(link) != network.id:
            log.info("adopting %s, made by the Go original for network %s",
                     link["ifname"], network.id[:12])
            driver.ip.run(cmd.mark_owned(link["ifname"], network.id, up=True))
        driver.vxlans_here.add(network.id)


def _network_of(driver, link):
    network = driver.networks.get(cmd.owner_of(link))
    return network or next((network for network in driver.networks.values()
                            if is_network_link(link, network)), None)


def reconcile_in_background(driver, docker, attempts=5, pause=15.0):
    """Removes unused links now, then what Docker no longer knows once it answers.

    Only networks and endpoints from before this start can be stale: one made
    since went through this process, and Docker may not have stored it yet
    when we ask (it stores its record after our answer)."""
    from_before = (set(driver.networks), set(driver.endpoints))

    def run():
        removed = remove_unused_links(driver)
        for attempt in range(attempts):
            try:
                forgotten = forget_what_docker_forgot(driver, docker, *from_before)
                removed += forgotten + (remove_unused_links(driver) if forgotten else [])
                break
            except DockerLookupError as error:
                log.warning("Docker did not answer (%s); asking again in %g s", error, pause)
                gevent.sleep(pause)
        log.info("reconciled: removed %s", ", ".join(removed) or "nothing")
    return gevent.spawn(run)


def forget_what_docker_forgot(driver, docker, network_ids, endpoint_ids):
    """Deletes those of the networks (local scope only) and endpoints given that
    Docker no longer has."""
    in_docker = {network_id: docker.endpoints_of(network_id)
                 for network_id in network_ids if network_id in driver.networks}
    removed = []
    for network_id, endpoints_in_docker in in_docker.items():
        if endpoints_in_docker is None:
            if driver.scope == "local":
                log.info("network %s no longer exists in Docker: removing it", network_id[:12])
                driver.delete_network(network_id)
                removed.append(network_id)
            continue
        for endpoint_id in endpoint_ids & {e.id for e in driver.endpoints_of(network_id)}:
            if endpoint_id not in endpoints_in_docker:
                log.info("endpoint %s no longer exists in Docker: removing it", endpoint_id[:12])
                driver.delete_endpoint(network_id, endpoint_id)
                removed.append(endpoint_id)
    return removed


def remove_unused_links(driver):
    """Our vxlans whose network is gone or has no endpoint here, and macvlans on
    them (in the host namespace, so in no container) whose endpoint is gone."""
    removed = []
    links = driver.ip.links()
    ours = {link["ifname"]: cmd.owner_of(link) for link in links
            if cmd.kind_of(link) == "vxlan" and cmd.owner_of(link)}
    for link in links:
        name = link["ifname"]
        if (cmd.kind_of(link) == "macvlan" and link.get("link") in ours
                and name.startswith("macvlan_")):
            network_id = ours[link["link"]]
            if not any(e.link == name for e in driver.endpoints.values()):
                with driver.network_locks[network_id]:
                    driver.delete_links([cmd.link_delete(name)])
                removed.append(name)
    for name, network_id in ours.items():
        with driver.network_locks[network_id]:
            if network_id not in driver.networks:
                driver.delete_links([cmd.link_delete(name)])
                removed.append(name)
            elif not driver.endpoints_of(network_id) and network_id not in driver.idle_vxlans:
                driver.vxlan_unused(network_id)  # lingers as after its last container
                if not driver.vxlan_linger:
                    removed.append(name)
    return removed
