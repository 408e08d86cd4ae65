"""The announcer's rounds and what it logs, with the frames recorded instead
of sent (tests/kernel/test_announce.py sends them)."""

import errno
import logging

import pytest

from vxlan import announce, auditlog, rawsocket
from vxlan.announce import Announcer

MAC = "02:42:0a:2a:00:02"


@pytest.fixture
def sent(monkeypatch):
    rounds = []
    monkeypatch.setattr(rawsocket, "send", lambda device, frames: rounds.append((device, frames)))
    return rounds


def results(caplog):
    return [r.audit for r in caplog.records if r.name == "vxlan.commands"
            and r.audit["event"] == "result"]


def test_each_round_sends_a_frame_per_address(sent, caplog):
    caplog.set_level(logging.INFO)
    token = auditlog.request_context.set({"rpc": "Join", "network": "n" * 64,
                                          "endpoint": "e" * 64})
    try:
        Announcer((0, 0.01, 0.02)).announce("vx_n", MAC, ("10.42.0.2", "fd42::2"),
                                            lambda: True).join()
    finally:
        auditlog.request_context.reset(token)
    assert [(device, len(frames)) for device, frames in sent] == [("vx_n", 2)] * 3
    [result] = results(caplog)
    assert result["status"] == "ok" and result["cause"] == announce.CAUSE
    assert result["note"] is None
    assert result["network"] == "n" * 64 and "rpc" not in result  # Join was answered


def test_rounds_stop_once_the_endpoint_is_gone(sent, caplog):
    caplog.set_level(logging.INFO)
    wanted = iter([True, False])
    Announcer((0, 0.01, 0.02)).announce("vx_n", MAC, ("10.42.0.2",),
                                        lambda: next(wanted)).join()
    assert len(sent) == 1
    [result] = results(caplog)
    assert result["status"] == "ok"
    assert result["note"] == "stopped after 1 of 3: the endpoint is gone"
    assert caplog.records[-1].getMessage().endswith(": stopped after 1 of 3: the endpoint is gone")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_failed_send_ends_the_rounds_and_is_logged_as_an_error(monkeypatch, caplog):
    def no_device(device, frames):
        raise OSError(errno.ENODEV, "No such device")
    monkeypatch.setattr(rawsocket, "send", no_device)
    Announcer((0, 0.01)).announce("vx_gone", MAC, ("10.42.0.2",), lambda: True).join()
    [result] = results(caplog)
    assert result["status"] == "failed" and result["stderr"] == "No such device (after 0 sent)"
    assert any(r.levelno == logging.ERROR and "announce 10.42.0.2" in r.getMessage()
               for r in caplog.records)


def test_the_line_says_what_from_where_and_is_no_shell_command():
    announcer = Announcer()
    assert announcer.describe("vx_n", MAC, ("10.42.0.2",)) == (
        f"announce 10.42.0.2 from {MAC} on vx_n (gratuitous ARP; 3 times in 1 s)")
    assert announcer.describe("vx_n", MAC, ("fd42::2",)).endswith("(unsolicited NA; 3 times in 1 s)")
    assert announcer.describe("vx_n", MAC, ()).startswith("announce the container's addresses")
