"""The `docker-vxlan-plugin` command: flags, logging, and the subcommands
`explain` (the commands a network would run, running nothing), `options` (the
option table), `status` (what is on this host, and drift) and `replay` (the
commands of an audit log, run again).

The daemon flags keep the Go original's spelling (-d, -scope, -vtepdev) and
also take the usual --debug, --scope, --vtepdev.
"""

import argparse
import json
import logging
import os
import signal
import sys

from .driver import VXLAN_LINGER
from .errors import PluginError
from .runner import COMMAND_TIMEOUT
from .options import InterfaceName, options_table_markdown

DEFAULT_SOCKET = "/run/docker/plugins/vxlan.sock"
DEFAULT_STATE_DIR = "/var/lib/docker-vxlan-plugin"
EXAMPLE_NETWORK_ID = "4e7d0c1f2b3a" + "0" * 52
EXAMPLE_ENDPOINT_IDS = ("5a1b2c3" + "0" * 57, "6d4e5f6" + "0" * 57)
SUBCOMMANDS = "explain, options, status, replay"


def _interface_name(text):
    try:
        return InterfaceName().parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid interface name {text!r}: expected {InterfaceName.accepted}") from None


def _seconds(text):
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(
            f"invalid number of seconds {text!r}: expected a number, 0 or more")
    return seconds


def _add_vtepdev(parser):
    parser.add_argument("-vtepdev", "--vtepdev", type=_interface_name, metavar="DEV",
                        help="underlay device of every vxlan; overrides -o VtepDev")


def serve_parser():
    parser = argparse.ArgumentParser(
        prog="docker-vxlan-plugin",
        description="Docker network driver: one VXLAN per network, a macvlan per container. "
                    f"Subcommands: {SUBCOMMANDS} (see `docker-vxlan-plugin SUBCOMMAND -h`).")
    _add_daemon_flags(parser)
    return parser


def _add_daemon_flags(parser):
    parser.add_argument("-d", "--debug", action="store_true", help="debug output")
    parser.add_argument("-scope", "--scope", choices=("local", "global"), default="local",
                        help="scope the driver reports to Docker (default: local)")
    _add_vtepdev(parser)
    parser.add_argument("--socket", default=DEFAULT_SOCKET,
                        help=f"unix socket to serve on (default: {DEFAULT_SOCKET}; its file "
                             "name without .sock is the driver name). Unused when systemd "
                             "passes the socket (socket activation)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help=f"where network options are kept (default: {DEFAULT_STATE_DIR})")
    parser.add_argument("--audit-log", metavar="FILE",
                        help="also log every ip/bridge command as JSON Lines to FILE")
    parser.add_argument("--command-timeout", type=float, default=COMMAND_TIMEOUT,
                        metavar="SECONDS", help="kill an ip/bridge command that runs longer "
                        f"and fail the request (default: {COMMAND_TIMEOUT:g})")
    parser.add_argument("--no-announce", dest="announce", action="store_false",
                        help="do not announce a container's addresses on the VXLAN after "
                             "Join (gratuitous ARP, unsolicited neighbour advertisements)")
    parser.add_argument("--probe-duplicates", type=_probe_wait, default=0, metavar="SECONDS",
                        help="at Join, ask the VXLAN whether another host holds the "
                             "container's address, wait SECONDS for an answer, and fail the "
                             "Join if one comes (local scope; default: off)")

    parser.add_argument("--vxlan-linger", type=_seconds, default=VXLAN_LINGER,
                        metavar="SECONDS", help="keep a network's vxlan this long after its "
                        "last container on this host leaves, for the next one; 0 deletes it "
                        f"with the last container (default: {VXLAN_LINGER:g})")


def _probe_wait(text):
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is None or not 0 < seconds <= 5:
        raise argparse.ArgumentTypeError(
            f"invalid wait {text!r}: expected seconds above 0 and at most 5, such as 0.2")
    return seconds


def explain_parser():
    parser = argparse.ArgumentParser(
        prog="docker-vxlan-plugin explain",
        description="Print the exact commands the plugin would run on this host for a "
                    "network with these options, after the same checks as "
                    "`docker network create`. It changes nothing (it only reads the "
                    "host's links).")
    parser.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="a network option, as given to docker network create")
    _add_vtepdev(parser)
    parser.add_argument("--network-id", default=EXAMPLE_NETWORK_ID,
                        help="the network ID to name links after (default: an example)")
    parser.add_argument("--endpoint-id", action="append", default=[], metavar="ID",
                        help="the endpoint ID of the first container, then of a further one "
                             "(default: examples)")
    parser.add_argument("--address", action="append", default=[], metavar="IPV4",
                        help="the first, then the further container's address, which the MAC "
                             "is made from, as the plugin does (default: a MAC from the ID)")
    return parser


def status_parser():
    parser = argparse.ArgumentParser(
        prog="docker-vxlan-plugin status",
        description="Show the plugin's networks and containers on this host, and every "
                    "difference (drift) between what its records and Docker say should "
                    "exist and what the kernel has, each with the command that would repair "
                    "it. Changes nothing; works whether the plugin runs or not. Run it where "
                    "the plugin runs (its network namespace), with the plugin's flags: it "
                    "takes them all, and uses --state-dir and -vtepdev.")
    _add_daemon_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 if there is drift (for monitoring)")
    return parser


def replay_parser():
    parser = argparse.ArgumentParser(
        prog="docker-vxlan-plugin replay",
        description="Run again, here, every command of an audit log (--audit-log) that "
                    "succeeded and changed the host, in the order they finished: rebuilds "
                    "the links of that run, e.g. in a fresh network namespace. Stops at the "
                    "first command that fails.")
    parser.add_argument("audit_log", metavar="AUDIT-LOG", help="a JSON Lines audit log")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands instead of running them")
    return parser


def setup_logging(debug):
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sh").setLevel(logging.WARNING)  # we log every command ourselves
    if not debug:
        for noisy in ("urllib3", "docker"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _patch_for_gevent():
    """Sockets become cooperative (the docker SDK must be imported after this).
    Threads, os and signals stay as they are, or sh hangs (see runner.py), and so
    does select: sh's helper threads poll, and a patched poll in a real thread
    makes a gevent hub (two file descriptors) that is never freed, on every
    command. threading.local must be per greenlet, because bottle keeps each
    request in one and many requests are served at once in the one thread.
    ssl is patched only where Python has it: the image leaves it out, since
    the plugin reaches Docker over a unix socket."""
    import importlib.util
    import threading

    import gevent.local
    from gevent import monkey

    monkey.patch_all(thread=False, os=False, signal=False, subprocess=False, select=False,
                     ssl=importlib.util.find_spec("ssl") is not None)
    monkey.patch_item(threading, "local", gevent.local.local)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["options"]:
        print(options_table_markdown())
        return 0
    subcommands = {"explain": explain_main, "status": status_main, "replay": replay_main}
    if argv[:1] and argv[0] in subcommands:
        try:
            return subcommands[argv[0]](argv[1:])
        except BrokenPipeError:  # the reader has had enough (`status | head`): end quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    args = serve_parser().parse_args(argv)
    setup_logging(args.debug)
    _patch_for_gevent()
    import gevent

    from .announce import Announcer
    from .dockerapi import DockerLookup
    from .driver import Driver
    from .probe import DuplicateProbe
    from .rawsocket import check_can_send
    from .runner import Ip
    from .state import StateStore
    from . import api, auditlog, recovery, server

    audit_file = auditlog.open_audit_file(args.audit_log) if args.audit_log else None
    gevent.signal_handler(signal.SIGHUP, _reopen_audit_file, audit_file)
    docker = DockerLookup()
    ip = Ip(args.command_timeout)
    try:
        ip.check_tools()
        if args.announce or args.probe_duplicates:
            check_can_send("--no-announce, no --probe-duplicates")
    except PluginError as error:
        raise SystemExit(f"docker-vxlan-plugin: {error}") from None
    driver = Driver(ip, docker, StateStore(args.state_dir), scope=args.scope,
                    vtepdev=args.vtepdev, vxlan_linger=args.vxlan_linger,
                    announcer=Announcer() if args.announce else None,
                    prober=DuplicateProbe(args.probe_duplicates) if args.probe_duplicates
                    else None)
    recovery.load(driver)
    recovery.reconcile_in_background(driver, docker)
    try:
        server.serve(api.make_app(driver), args.socket)
    finally:
        ip.close()
    return 0


def _reopen_audit_file(audit_file):
    """SIGHUP, as after a log rotation: reopen the audit log (never stop)."""
    log = logging.getLogger("vxlan.cli")
    if audit_file is None:
        log.info("SIGHUP: no audit log to reopen")
        return
    log.info("SIGHUP: reopening the audit log %s", audit_file.baseFilename)
    audit_file.reopen()


def explain_main(argv):
    args = explain_parser().parse_args(argv)
    setup_logging(False)
    logging.getLogger("vxlan.commands").setLevel(logging.WARNING)  # stdout is the answer
    from .announce import Announcer
    from .driver import explain
    from .runner import Ip
    import shlex

    raw = {}
    for item in args.opt:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"explain: -o {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        raw[key] = value
    if len(args.endpoint_id) > 2 or len(args.address) > 2:
        print("explain: --endpoint-id and --address: at most two each (the first and a "
              "further container)", file=sys.stderr)
        return 2
    endpoint_ids = args.endpoint_id + list(EXAMPLE_ENDPOINT_IDS[len(args.endpoint_id):])
    addresses = args.address + [None] * (2 - len(args.address))
    try:
        steps = explain(raw, args.vtepdev, Ip(), args.network_id,
                        list(zip(endpoint_ids, addresses)), Announcer())
    except PluginError as error:
        print(f"explain: {error}", file=sys.stderr)
        return 1
    for step, commands in steps:
        print(f"# {step}")
        for command in commands:
            print(command if isinstance(command, str) else shlex.join(command))
    return 0


def status_main(argv):
    args = status_parser().parse_args(argv)
    setup_logging(False)
    logging.getLogger("vxlan.commands").setLevel(logging.WARNING)  # stdout is the answer
    from .dockerapi import DockerLookup
    from .runner import Ip
    from . import status

    ip = Ip()
    try:
        report = status.survey(args.state_dir, ip, DockerLookup(), args.vtepdev)
    except PluginError as error:
        print(f"status: {error}", file=sys.stderr)
        return 2
    finally:
        ip.close()
    print(json.dumps(report, indent=1) if args.json else status.table(report))
    return 1 if args.check and report["drift"] else 0


def replay_main(argv):
    args = replay_parser().parse_args(argv)
    setup_logging(False)
    from .auditlog import replayable
    from .runner import Ip
    import shlex

    try:
        with open(args.audit_log) as f:
            commands, skipped = replayable(f)
    except (OSError, ValueError) as error:
        print(f"replay: {args.audit_log}: {error}", file=sys.stderr)
        return 2
    for line in skipped:
        print(f"replay: skipping a command that may or may not have run: {line}",
              file=sys.stderr)
    if args.dry_run:
        print("\n".join(shlex.join(argv) for argv in commands))
        return 0
    ip = Ip()
    try:
        for command in commands:
            # one process each: a batch would keep link indexes across a delete and re-add
            ip.run(command)
    except PluginError as error:
        print(f"replay: {error}", file=sys.stderr)
        return 1
    finally:
        ip.close()
    return 0
