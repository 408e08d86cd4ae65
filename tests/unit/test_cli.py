"""Daemon flags as the Go original wrote them and in the usual long form."""

import pytest

from vxlan.cli import main, serve_parser, status_parser


@pytest.mark.parametrize("argv", [
    ["-d", "-scope=global", "-vtepdev", "eth0"],
    ["-d", "-scope", "global", "-vtepdev=eth0"],
    ["--debug", "--scope", "global", "--vtepdev", "eth0"],
])
def test_original_and_long_flags(argv):
    args = serve_parser().parse_args(argv)
    assert (args.debug, args.scope, args.vtepdev) == (True, "global", "eth0")


def test_defaults():
    args = serve_parser().parse_args([])
    assert args.scope == "local" and args.vtepdev is None and not args.debug
    assert args.socket == "/run/docker/plugins/vxlan.sock"
    assert args.state_dir == "/var/lib/docker-vxlan-plugin"
    assert args.command_timeout == 10
    assert args.announce  # --no-announce turns it off
    assert not serve_parser().parse_args(["--no-announce"]).announce
    assert args.probe_duplicates == 0  # off
    assert serve_parser().parse_args(["--probe-duplicates", "0.2"]).probe_duplicates == 0.2
    assert args.vxlan_linger == 60


@pytest.mark.parametrize("argv, message", [
    (["-scope", "cluster"], "invalid choice: 'cluster'"),
    (["-vtepdev", "-eth0"], "expected one argument"),
    (["-vtepdev", "eth 0"], "invalid interface name 'eth 0'"),
    (["--probe-duplicates", "0"], "argument --probe-duplicates: invalid wait '0': expected "
                                  "seconds above 0 and at most 5, such as 0.2"),
    (["--probe-duplicates", "soon"], "invalid wait 'soon'"),
    (["--probe-duplicates", "30"], "invalid wait '30'"),
    (["--vxlan-linger", "-1"], "argument --vxlan-linger: invalid number of seconds '-1': "
                               "expected a number, 0 or more"),
    (["--vxlan-linger", "soon"], "invalid number of seconds 'soon'"),
    (["--vxlan-linger", "nan"], "invalid number of seconds 'nan'"),
])
def test_bad_flags_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        serve_parser().parse_args(argv)
    assert message in capsys.readouterr().err


def test_vxlan_linger_takes_seconds_and_zero():
    assert serve_parser().parse_args(["--vxlan-linger", "0"]).vxlan_linger == 0
    assert serve_parser().parse_args(["--vxlan-linger", "2.5"]).vxlan_linger == 2.5


def test_options_subcommand_prints_the_table(capsys):
    assert main(["options"]) == 0
    assert "| `VxlanId` |" in capsys.readouterr().out


def test_explain_refuses_malformed_option(capsys):
    assert main(["explain", "-o", "VxlanId"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_status_takes_the_daemons_command_line():
    """`docker-vxlan-plugin status $DOCKER_VXLAN_PLUGIN_FLAGS` works as it is."""
    args = status_parser().parse_args([
        "-d", "-scope", "global", "-vtepdev", "eth0", "--socket", "/run/docker/plugins/v.sock",
        "--state-dir", "/srv/vxlan", "--audit-log", "/var/log/vxlan.jsonl", "--check"])
    assert (args.vtepdev, args.state_dir, args.check, args.json) == (
        "eth0", "/srv/vxlan", True, False)


def test_explain_takes_at_most_two_endpoints(capsys):
    assert main(["explain", "-o", "VxlanId=42", *["--endpoint-id", "a1"] * 3]) == 2
    assert "at most two each" in capsys.readouterr().err
