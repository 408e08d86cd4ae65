"""The `docker-vxlan-plugin` command: flags, logging, and the subcommands
`explain` (the commands a network would run, running nothing) and `options`
(the option table).

The daemon flags keep the Go original's spelling (-d, -scope, -vtepdev) and
also take the usual --debug, --scope, --vtepdev.
"""

import argparse
import logging
import sys

from .driver import VXLAN_LINGER
from .errors import PluginError
from .runner import COMMAND_TIMEOUT
from .options import InterfaceName, options_table_markdown

DEFAULT_SOCKET = "/run/docker/plugins/vxlan.sock"
DEFAULT_STATE_DIR = "/var/lib/docker-vxlan-plugin"
EXAMPLE_NETWORK_ID = "4e7d0c1f2b3a" + "0" * 52
EXAMPLE_ENDPOINT_IDS = ("5a1b2c3" + "0" * 57, "6d4e5f6" + "0" * 57)


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
                    "Subcommands: explain, options (see `docker-vxlan-plugin explain -h`).")
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
    parser.add_argument("--vxlan-linger", type=_seconds, default=VXLAN_LINGER,
                        metavar="SECONDS", help="keep a network's vxlan this long after its "
                        "last container on this host leaves, for the next one; 0 deletes it "
                        f"with the last container (default: {VXLAN_LINGER:g})")
    return parser


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
    Threads, os, signals and subprocess stay as they are: the runner starts and
    waits for processes in real threads of its pool (see runner.py). So does
    select: a patched poll in a real thread makes a gevent hub (two file
    descriptors) there that is never freed. threading.local must be per
    greenlet, because bottle keeps each request in one and many requests are
    served at once in the one thread."""
    import threading

    import gevent.local
    from gevent import monkey

    monkey.patch_all(thread=False, os=False, signal=False, subprocess=False, select=False)
    monkey.patch_item(threading, "local", gevent.local.local)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["options"]:
        print(options_table_markdown())
        return 0
    if argv[:1] == ["explain"]:
        return explain_main(argv[1:])
    args = serve_parser().parse_args(argv)
    setup_logging(args.debug)
    _patch_for_gevent()
    from .dockerapi import DockerLookup
    from .driver import Driver
    from .runner import Ip
    from .state import StateStore
    from . import api, auditlog, recovery, server

    if args.audit_log:
        auditlog.open_audit_file(args.audit_log)
    docker = DockerLookup()
    ip = Ip(args.command_timeout)
    try:
        ip.check_tools()
    except PluginError as error:
        raise SystemExit(f"docker-vxlan-plugin: {error}") from None
    driver = Driver(ip, docker, StateStore(args.state_dir), scope=args.scope,
                    vtepdev=args.vtepdev, vxlan_linger=args.vxlan_linger)
    recovery.load(driver)
    recovery.reconcile_in_background(driver, docker)
    try:
        server.serve(api.make_app(driver), args.socket)
    finally:
        ip.close()
    return 0


def explain_main(argv):
    args = explain_parser().parse_args(argv)
    setup_logging(False)
    logging.getLogger("vxlan.commands").setLevel(logging.WARNING)  # stdout is the answer
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
    try:
        steps = explain(raw, args.vtepdev, Ip(), args.network_id,
                        EXAMPLE_ENDPOINT_IDS)
    except PluginError as error:
        print(f"explain: {error}", file=sys.stderr)
        return 1
    for step, commands in steps:
        print(f"# {step}")
        for argv in commands:
            print(shlex.join(argv))
    return 0
