"""The runner: which commands share one `TOOL -batch -` process, how a batch's
failure is read back, and, against fake tools on PATH, how failures, kills and
vanished tools are logged and reported."""

import logging
import os
import signal

import gevent
import pytest

from tests.wait import wait_for
from vxlan import runner
from vxlan.errors import CommandError


@pytest.mark.parametrize("argv, batchable", [
    (["ip", "link", "add", "vx1", "type", "vxlan", "id", "42"], True),
    (["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx1", "dst", "2001:db8::2"], True),
    (["ip", "-d", "-j", "link", "show"], False),      # options before the command
    (["ip", "link", "add", "a b", "type", "dummy"], False),   # would split into two words
    (["ip", "link", "set", "dev", "x", "alias", "it's"], False),
    (["ip", "link", "set", "dev", "x", "alias", "#1"], False),  # a comment in a batch
    (["ip", "link", "set", "dev", "x", "alias", ""], False),
])
def test_what_can_be_a_batch_line(argv, batchable):
    assert runner._batchable(argv) is batchable


def test_groups_keep_order_and_split_by_tool_and_kind():
    add = ["ip", "link", "add", "vx1", "type", "vxlan", "id", "42"]
    up = ["ip", "link", "set", "dev", "vx1", "up"]
    flood = ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx1", "dst", "192.0.2.2"]
    show = ["ip", "-j", "link", "show", "dev", "vx1"]
    odd = ["ip", "link", "set", "dev", "vx1", "alias", "a b"]
    assert runner._groups([add, up, flood, flood, up, show, odd, up]) == [
        [add, up], [flood, flood], [up], [show], [odd], [up]]


def test_the_failed_line_and_the_message_without_the_batch_note():
    stderr = "RTNETLINK answers: File exists\nCommand failed -:2\n"
    assert runner._failed_line(stderr, 3) == 1
    assert runner._failed_line("no line number here", 3) == 0
    assert runner._BATCH_NOTE.sub("", stderr) == "RTNETLINK answers: File exists\n"


# --- the runner against a fake `ip` on PATH (no root needed) -----------------------

FAKE_TOOL = r'''#!/usr/bin/env python3
"""A stand-in for iproute2's ip/bridge. A line with "hang" sleeps, one with
"fail" fails as ip does; each line run is recorded in $FAKE_LOG as 'PID LINE'."""
import os, sys, time
tool = os.path.basename(sys.argv[0])
log = open(os.environ["FAKE_LOG"], "a", buffering=1)
args = sys.argv[1:]
if args == ["-V"]:
    print(f"{tool} utility, iproute2-6.1.0")
    sys.exit(0)
if args[:2] == ["-batch", "-"]:
    log.write(f"{os.getpid()} (waiting)\n")
    lines = [line.strip() for line in sys.stdin]
else:
    lines = [" ".join(args)]
    if "-j" in args:
        print("[]")
for number, line in enumerate(lines, 1):
    log.write(f"{os.getpid()} {line}\n")
    if "hang" in line:
        time.sleep(60)
    if "fail" in line:
        sys.stderr.write("RTNETLINK answers: File exists\n")
        if args[:1] == ["-batch"]:
            sys.stderr.write(f"Command failed -:{number}\n")
        sys.exit(2)
'''


class FakeTools:
    def __init__(self, folder):
        self.bin = folder / "bin"
        self.bin.mkdir()
        self.log = folder / "ran.log"
        for tool in ("ip", "bridge"):
            path = self.bin / tool
            path.write_text(FAKE_TOOL)
            path.chmod(0o755)

    def ran(self):
        """[(pid, line)] of every line the fakes ran, in order."""
        return [entry for entry in self.entries() if entry[1] != "(waiting)"]

    def entries(self):
        if not self.log.exists():
            return []
        return [tuple(entry.split(" ", 1)) for entry in self.log.read_text().splitlines()]

    def waiting(self):
        """PIDs of `-batch -` fakes started and not yet given a line."""
        given = {pid for pid, _ in self.ran()}
        return [int(pid) for pid, line in self.entries()
                if line == "(waiting)" and pid not in given and _running(int(pid))]


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # ended between open and read
        return False


@pytest.fixture
def fake(tmp_path, monkeypatch):
    tools = FakeTools(tmp_path)
    monkeypatch.setenv("PATH", f"{tools.bin}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tools.log))
    return tools


@pytest.fixture
def command_log(caplog):
    """The command log's records (what the audit file gets), as dicts."""
    caplog.set_level(logging.INFO, logger="vxlan.commands")
    return lambda: [r.audit for r in caplog.records if hasattr(r, "audit")]


@pytest.fixture
def make_runner():
    runners = []

    def make(timeout=5.0):
        runners.append(runner.Ip(timeout=timeout))
        return runners[-1]
    yield make
    for made in runners:
        made.close()


def results(records):
    return [(r["cmd"], r["status"]) for r in records if r["event"] == "result"]


def link_set(name):
    return ["ip", "link", "set", "dev", name, "up"]


def test_a_line_that_fails_mid_batch(fake, command_log, make_runner):
    ip = make_runner()
    with pytest.raises(CommandError) as failure:
        ip.batch([link_set("a"), link_set("fail"), link_set("c")])
    assert failure.value.done == [link_set("a")]
    assert "`ip link set dev fail up` failed: RTNETLINK answers: File exists" in str(
        failure.value)
    assert results(command_log()) == [("ip link set dev a up", "ok"),
                                      ("ip link set dev fail up", "failed (exit 2)"),
                                      ("ip link set dev c up", "not run")]
    assert [line for _, line in fake.ran()] == ["link set dev a up", "link set dev fail up"]


def test_a_batch_killed_on_timeout_is_logged_as_may_have_run(fake, command_log, make_runner):
    ip = make_runner(timeout=2)
    commands = [link_set("a"), link_set("hang"), link_set("c")]
    with pytest.raises(CommandError) as failure:
        ip.batch(commands)
    message = str(failure.value)
    assert "`ip -batch -` with 3 commands" in message and "may have run" in message
    assert "timed out after 2 s and was killed" in message
    assert failure.value.done == commands  # the caller undoes all it may have made
    assert results(command_log()) == [(" ".join(argv), "killed on timeout, may have run")
                                      for argv in commands]
    # on a busy machine the kill may come before the fake reached the lines:
    # what ran is a start of them, up to the hanging one, in one process
    ran = fake.ran()
    lines = [line for _, line in ran]
    assert lines == ["link set dev a up", "link set dev hang up"][:len(lines)]
    # no retry on a fresh process after the kill, and the killed one is gone
    assert len({pid for pid, _ in ran}) <= 1
    assert not any(_running(int(pid)) for pid, _ in ran)


def test_a_waiting_process_that_died_is_replaced(fake, command_log, make_runner):
    ip = make_runner()
    ip.batch([link_set("a")])
    gevent.sleep(0)  # the next one is started once the request's greenlet waits
    [waiting] = wait_for(fake.waiting, 5, "the next ip -batch - to wait")
    os.kill(waiting, signal.SIGKILL)
    wait_for(lambda: not _running(waiting), 5, "the waiting ip to die")
    ip.batch([link_set("b")])  # its pipe is broken before any line: a fresh one runs it
    assert [line for _, line in fake.ran()] == ["link set dev a up", "link set dev b up"]
    assert results(command_log()) == [("ip link set dev a up", "ok"),
                                      ("ip link set dev b up", "ok")]


def test_a_tool_that_vanishes_fails_the_request_cleanly(fake, make_runner, monkeypatch):
    ip = make_runner()
    ip.run(["ip", "-j", "link", "show"])
    ip.close()  # nothing waits any more: the next command starts anew
    (fake.bin / "ip").unlink()
    monkeypatch.setenv("PATH", str(fake.bin))  # and finds no other ip
    for command in (["ip", "-j", "link", "show"], link_set("a")):
        with pytest.raises(CommandError, match="could not start ip"):
            ip.run(command)


def test_check_tools_names_what_to_install(fake, tmp_path, monkeypatch, make_runner):
    make_runner().check_tools()  # the fakes say they are iproute2's
    (fake.bin / "bridge").write_text("#!/bin/sh\necho 'BusyBox v1.36.1 multi-call binary'\n")
    with pytest.raises(CommandError, match=r"`bridge` \(.*/bin/bridge\) is not iproute2's: "
                                           r"install iproute2"):
        make_runner().check_tools()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(CommandError, match="`ip` was not found on PATH: install iproute2"):
        make_runner().check_tools()


def test_a_helper_that_ends_loses_only_what_it_ran(fake, command_log, make_runner):
    # The helper (spawner.py) starts and reaps our processes. If it dies, a
    # command in flight is logged as lost and its process killed; the next
    # command starts a new helper.
    ip = make_runner(timeout=30)
    ip.batch([link_set("a")])
    helper = ip._spawner._helper.pid
    hanging = gevent.spawn(ip.batch, [link_set("hang")])
    with gevent.Timeout(10):  # it runs while this greenlet sleeps
        while "link set dev hang up" not in [line for _, line in fake.ran()]:
            gevent.sleep(0.05)
    os.kill(helper, signal.SIGKILL)
    with pytest.raises(CommandError, match="lost \\(its helper ended\\).*may have run"):
        hanging.get(timeout=10)
    [(pid, _)] = [entry for entry in fake.ran() if entry[1] == "link set dev hang up"]
    wait_for(lambda: not _running(int(pid)), 5, "the lost process to be killed")
    ip.batch([link_set("b")])
    assert ip._spawner._helper.pid != helper
    assert results(command_log()) == [
        ("ip link set dev a up", "ok"),
        ("ip link set dev hang up", "lost (its helper ended), may have run"),
        ("ip link set dev b up", "ok")]
