"""The audit file: one whole JSON line per record, kept through a rename (with
or without reopen) and a truncation, a failed write reported and survived; and
which of its commands a replay runs again."""

import json
import logging
import os

import pytest

from vxlan import auditlog


@pytest.fixture
def audit(tmp_path):
    """(handler, path) of an audit file on the command log; removed after."""
    path = tmp_path / "audit.jsonl"
    handler = auditlog.open_audit_file(str(path))
    yield handler, path
    auditlog.log.removeHandler(handler)
    handler.close()


def commands_in(path):
    return [json.loads(line)["cmd"] for line in path.read_text().splitlines()]


def test_a_renamed_file_is_followed_by_a_new_one(audit):
    handler, path = audit
    auditlog.started("ip link add vx1 type vxlan id 1")
    path.rename(path.with_suffix(".1"))            # logrotate's rename, no create
    auditlog.started("ip link add vx2 type vxlan id 2")
    assert commands_in(path.with_suffix(".1")) == ["ip link add vx1 type vxlan id 1"]
    assert commands_in(path) == ["ip link add vx2 type vxlan id 2"]


def test_reopen_makes_the_new_file_at_once(audit):
    handler, path = audit
    auditlog.started("ip link add vx1 type vxlan id 1")
    path.rename(path.with_suffix(".1"))
    handler.reopen()                               # what SIGHUP does
    assert path.exists() and path.read_text() == ""
    assert os.fstat(handler.stream.fileno()).st_ino == path.stat().st_ino


def test_after_a_truncation_records_start_at_the_beginning(audit):
    handler, path = audit
    auditlog.started("ip link add vx1 type vxlan id 1")
    copy = path.read_text()
    os.truncate(path, 0)                           # logrotate's copytruncate
    auditlog.started("ip link add vx2 type vxlan id 2")
    assert "\0" not in path.read_text()
    assert commands_in(path) == ["ip link add vx2 type vxlan id 2"]
    assert json.loads(copy)["cmd"] == "ip link add vx1 type vxlan id 1"


def test_a_failed_write_is_reported_and_the_command_log_goes_on(caplog, capsys):
    handler = auditlog.open_audit_file("/dev/full")  # every write: "No space left on device"
    try:
        with caplog.at_level(logging.INFO, logger="vxlan.commands"):
            auditlog.started("ip link add vx1 type vxlan id 1")   # raises nothing
            auditlog.finished("ip link add vx1 type vxlan id 1", None, "ok", 0.002)
    finally:
        auditlog.log.removeHandler(handler)
        handler.close()
    assert handler.failures == 2
    err = capsys.readouterr().err
    assert ("AUDIT LOG WRITE FAILED (/dev/full: [Errno 28] No space left on device); this "
            "record is missing from it: ok  ip link add vx1 type vxlan id 1 (2.0 ms)") in err
    # the human log still shows that the command ran
    assert [r.getMessage() for r in caplog.records] == [
        "run ip link add vx1 type vxlan id 1", "ok  ip link add vx1 type vxlan id 1 (2.0 ms)"]


def record(event, cmd, status=None):
    return json.dumps({"time": "2026-12-02T18:11:40.196+00:00", "event": event, "cmd": cmd,
                       "rpc": "Join", **({"status": status} if status else {})}) + "\n"


def test_replay_takes_what_changed_the_host_in_the_order_it_finished():
    lines = [
        record("run", "ip -d -j link show"),
        record("result", "ip -d -j link show", "ok"),
        record("run", "ip link add vx1 type vxlan id 1 dstport 4789"),
        record("result", "ip link add vx1 type vxlan id 1 dstport 4789", "ok"),
        record("result", "ip link set dev vx1 alias docker-vxlan-plugin:ab up", "ok"),
        record("result", "ip link add macvlan_1 link vx9 type macvlan mode bridge",
               "failed (exit 1)"),
        record("result", "ip link add macvlan_2 link vx9 type macvlan mode bridge", "not run"),
        record("result", "bridge fdb append 00:00:00:00:00:00 dev vx1 dst 192.0.2.2",
               "killed on timeout, may have run"),
        "\n",
        record("result", "ip link delete dev vx1", "ok"),
    ]
    commands, doubtful = auditlog.replayable(lines)
    assert commands == [
        ["ip", "link", "add", "vx1", "type", "vxlan", "id", "1", "dstport", "4789"],
        ["ip", "link", "set", "dev", "vx1", "alias", "docker-vxlan-plugin:ab", "up"],
        ["ip", "link", "delete", "dev", "vx1"]]
    assert doubtful == ["bridge fdb append 00:00:00:00:00:00 dev vx1 dst 192.0.2.2"]


def test_replay_names_a_line_that_is_not_a_record():
    with pytest.raises(ValueError, match="line 2 is not an audit record"):
        auditlog.replayable([record("run", "ip link show"), '{"event": "result", "cmd": \n'])
