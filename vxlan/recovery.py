"""Start-up: load what the plugin remembers, find its links on the host, and
clean up what a crash or an outage left behind.

The records are a cache of what Docker knows, and may be lost (a state volume
left out, another --state-dir), damaged or unusable (a record that no longer
validates, one of a newer format). So nothing is deleted on the strength of
them alone: `load` runs before the socket opens, needs only the state and the
kernel, and deletes nothing; `reconcile_in_background` runs after, because it
asks Docker, which may itself be starting and waiting for this plugin. Once
Docker answers, records it has and we lack are rebuilt from it, and only links
of networks and endpoints Docker no longer has are removed, each in the command
log like every other command.
"""

import logging

import gevent

from .errors import CommandError, DockerLookupError, PluginError

log = logging.getLogger("vxlan.recovery")
FIRST_PAUSE = 5.0     # seconds before asking Docker again; doubled each time
LONGEST_PAUSE = 60.0


def load(driver):
    """Reads the state and finds which of our vxlans exist on this host."""
    networks = driver.state.load_all("networks")
    endpoints = driver.state.load_all("endpoints")
    for network_id, why in networks.newer.items():
        driver.hold(network_id, f"network {network_id[:12]}: {why}")
    for network_id, record in networks.records.items():
        driver.restore_network(network_id, record)
    complete = not endpoints.newer and not endpoints.unreadable
    for endpoint_id, why in endpoints.newer.items():
        log.error("endpoint %s: %s; Docker's record is used", endpoint_id[:12], why)
    for endpoint_id, record in endpoints.records.items():
        complete = driver.restore_endpoint(endpoint_id, record) and complete
    if not complete:
        # an endpoint we cannot read may be any network's: keep every vxlan
        # until Docker has said which endpoints each one has
        driver.doubt_endpoint_records()
    for link in driver.ip.links("vxlan"):
        try:
            driver.found_vxlan(link)
        except CommandError as error:  # logged by the runner; the link stays as it is
            log.error("could not adopt %s: %s", link["ifname"], error)


def reconcile_in_background(driver, docker):
    """Asks Docker about every network from before this start, until it answers;
    then rebuilds what the state lacks and removes what Docker no longer has.

    Only networks and endpoints from before this start can be stale: one made
    since went through this process, and Docker may not have stored it yet
    when we ask (it stores its record after our answer)."""
    endpoints = set(driver.endpoints)
    waiting = sorted(driver.networks_to_confirm())

    def run():
        removed, pause = [], FIRST_PAUSE
        while True:
            try:
                while waiting:
                    network_id = waiting[0]
                    found = docker.network(network_id)
                    removed += _or_logged(f"reconciling network {network_id[:12]}",
                                          driver.learn_from_docker, network_id, found, endpoints)
                    waiting.pop(0)
                removed += _or_logged("removing unused links", driver.remove_unused_links)
                break
            except DockerLookupError as error:
                log.warning("Docker did not answer (%s): the links of %d networks stay as "
                            "they are until it does; asking again in %g s", error,
                            len(waiting), pause)
                gevent.sleep(pause)
                pause = min(2 * pause, LONGEST_PAUSE)
        log.info("reconciled: removed %s", ", ".join(removed) or "nothing")
    return gevent.spawn(run)


def _or_logged(what, call, *args):
    """CALL's list of what it removed; [] if a command failed (the runner logged
    it), which is logged too: the rest goes on."""
    try:
        return call(*args)
    except PluginError as error:
        log.error("%s: %s", what, error)
        return []
