"""The server: one slow command does not stall other requests, commands time
out, the socket is root's alone, SIGTERM stops cleanly, and a socket passed by
systemd (socket activation) is served and left in place."""

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from tests import rpc
from tests.kernel.conftest import (REPO, Plugin, create_and_join, endpoint_request,
                                   network_request, new_id, one_waiting, start_join)

def test_requests_are_served_while_a_command_runs(slow_plugin):
    plugin = slow_plugin(3)
    results = {}
    thread, _ = start_join(plugin, results)
    time.sleep(0.5)  # the Join is now inside its slow `ip`
    started = time.monotonic()
    assert plugin.ok("GetCapabilities") == {"Scope": "local", "ConnectivityScope": "local"}
    other_seconds = time.monotonic() - started
    thread.join()
    assert results["join"][0] == 200, results["join"]
    assert results["join_seconds"] > 2.5
    assert other_seconds < 1.0, f"a trivial request waited {other_seconds:.2f} s"


def test_a_hung_command_times_out_with_a_clear_error(slow_plugin, netns, workdir):
    plugin = slow_plugin(30, "--command-timeout", "1")
    results = {}
    thread, network_id = start_join(plugin, results)
    thread.join()
    status, answer = results["join"]
    assert status == 500 and "timed out after 1 s" in answer["Err"]
    assert "`ip -batch -` with 3 commands" in answer["Err"] and "may have run" in answer["Err"]
    assert results["join_seconds"] < 10
    # ip prints nothing for a line that worked: every line of the killed batch is unconfirmed
    batch = [(r["cmd"].split()[:3], r["status"]) for r in plugin.audit()
             if r["event"] == "result" and (r.get("batch") or {}).get("size") == 3]
    assert batch == [(["ip", "link", "add"], "killed on timeout, may have run"),
                     (["ip", "link", "set"], "killed on timeout, may have run"),
                     (["ip", "link", "add"], "killed on timeout, may have run")]
    os.unlink(os.path.join(workdir, "slow"))
    # The killed batch may have created links: they were undone.
    assert netns.link_names() == {"lo", "eth0"}


def test_no_ip_on_path_is_one_clear_line_at_start(netns, workdir):
    bindir = os.path.join(workdir, "bin")  # python alone, no ip or bridge
    os.makedirs(bindir)
    os.symlink(sys.executable, os.path.join(bindir, "python3"))
    done = subprocess.run([shutil.which("ip"), "netns", "exec", netns.name, sys.executable,
                           "-m", "vxlan", "--socket", os.path.join(workdir, "vxlan.sock"),
                           "--state-dir", os.path.join(workdir, "state")],
                          capture_output=True, text=True, timeout=30, cwd=REPO,
                          env={**os.environ, "PATH": bindir})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "docker-vxlan-plugin: `ip` was not found on PATH: install iproute2 "
        "(Debian: apt-get install iproute2)")
    assert "Traceback" not in done.stderr
    assert not os.path.exists(os.path.join(workdir, "vxlan.sock"))


def test_socket_is_for_root_only(plugin):
    mode = stat.S_IMODE(os.stat(plugin.socket).st_mode)
    assert mode & 0o077 == 0, oct(mode)


def test_stale_socket_is_replaced_and_live_one_kept(netns, workdir):
    path = os.path.join(workdir, "vxlan.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: as after a crash
    first = Plugin(netns, workdir).start()
    try:
        assert first.ok("Plugin.Activate") == {"Implements": ["NetworkDriver"]}
        done = subprocess.run(["ip", "netns", "exec", netns.name, sys.executable, "-m", "vxlan",
                               "--socket", path, "--state-dir", os.path.join(workdir, "s2")],
                              capture_output=True, text=True, timeout=30,
                              cwd=REPO)
        assert done.returncode != 0 and "another process is serving" in done.stderr
        assert first.ok("Plugin.Activate")  # the first one still serves
    finally:
        first.stop()


def test_sigterm_stops_cleanly_and_removes_the_socket(plugin):
    assert plugin.stop(signal.SIGTERM) == 0
    assert not os.path.exists(plugin.socket)
    assert "stopped; removed" in plugin.log()


def test_unknown_paths_and_bad_bodies(plugin):
    assert rpc.call(plugin.socket, "NetworkDriver.NoSuchThing", {})[0] == 404
    status, answer = rpc.call_raw(plugin.socket, "NetworkDriver.CreateNetwork", b"{not json")
    assert status == 400 and "not JSON" in answer["Err"]
    status, answer = rpc.call(plugin.socket, "NetworkDriver.Join", {"NetworkID": 5})
    assert status == 400 and "NetworkID must be an ID" in answer["Err"]
    assert plugin.ok("Plugin.Activate")  # and it keeps serving


def exchange(socket_path, requests):
    """The raw answers to REQUESTS (bytes) sent on one connection, one at a
    time: each read until its body is complete (Content-Length)."""
    answers = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(socket_path)
        for request in requests:
            client.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data or len(data) < answer_size(data):
                chunk = client.recv(65536)
                assert chunk, f"the plugin closed the connection; so far: {data!r}"
                data += chunk
            answers.append(data)
    return answers


def answer_size(data):
    head, _, _ = data.partition(b"\r\n\r\n")
    length = [line.split(b":")[1] for line in head.split(b"\r\n")
              if line.lower().startswith(b"content-length:")]
    return len(head) + 4 + int(length[0])


def test_http_as_any_client_may_send_it(plugin):
    """Docker's client sends a Content-Length; other HTTP/1.1 clients may send
    a chunked body, header names in any case, several requests on one
    connection. Headers past the limits get a 400, and the plugin serves on."""
    body = b'{"NetworkID": "ab", "EndpointID": "cd"}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    answers = exchange(plugin.socket, [
        b"POST /NetworkDriver.Leave HTTP/1.1\r\nHost: plugin\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked,
        b"POST /NetworkDriver.Join HTTP/1.1\r\nhost: plugin\r\nCONTENT-LENGTH: 15\r\n"
        b"\r\n{\"NetworkID\":5}",
        b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\n\r\n"])
    assert [a.split(b"\r\n")[0] for a in answers] == [
        b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 200 OK"]
    assert answers[0].endswith(b"\r\n\r\n{}")
    assert b'"Err": "NetworkDriver.Join: NetworkID must be an ID' in answers[1]
    assert answers[2].endswith(b'{"Implements": ["NetworkDriver"]}')
    for headers in (b"X-Long: " + b"a" * 70000 + b"\r\n",
                    b"".join(b"X-%d: 1\r\n" % n for n in range(101)),
                    b"no colon\r\n", b" folded: first\r\n"):
        status = exchange(plugin.socket, [b"POST /Plugin.Activate HTTP/1.1\r\n" + headers
                                          + b"Content-Length: 0\r\n\r\n"])[0]
        assert status.startswith(b"HTTP/1.1 400 "), status[:200]
    assert plugin.ok("Plugin.Activate")


def open_files(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_commands_leave_no_open_files_behind(plugin):
    network_id = new_id()
    plugin.ok("CreateNetwork", network_request(network_id, {"VxlanId": "21"}))

    def cycle(count):
        for _ in range(count):
            endpoint_id = new_id()
            plugin.ok("CreateEndpoint", endpoint_request(network_id, endpoint_id))
            plugin.ok("Join", {"NetworkID": network_id, "EndpointID": endpoint_id})
            plugin.delete_endpoint(network_id, endpoint_id)
    cycle(5)  # threads and pools warmed up
    one_waiting(plugin)  # the next `ip -batch -` and its files are there
    before = open_files(plugin.process.pid)
    cycle(30)  # 60 commands
    one_waiting(plugin)
    assert open_files(plugin.process.pid) <= before + 2


def test_serves_on_the_socket_systemd_passes_and_leaves_it_there(netns, workdir):
    """systemd-socket-activate holds the socket as a .socket unit does, and
    execs the plugin in its place at the first connection (Plugin.start's
    first call): the plugin serves on the socket it inherited."""
    activator = shutil.which("systemd-socket-activate")
    if activator is None:
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd)")
    path = os.path.join(workdir, "vxlan.sock")
    plugin = Plugin(netns, workdir, ["--vtepdev", "eth0"], launcher=[activator, "-l", path])
    plugin.start()
    try:
        assert f"serving the vxlan network driver on {path} (from systemd)" in plugin.log()
        network_id, _, _, _ = create_and_join(plugin, {"VxlanId": "22"})
        assert netns.link("vx_" + network_id[:12])["linkinfo"]["info_data"]["id"] == 22
        assert os.readlink(f"/proc/{plugin.process.pid}/fd/3").startswith("socket:")
    finally:
        assert plugin.stop(signal.SIGTERM) == 0
    assert stat.S_ISSOCK(os.stat(path).st_mode)  # systemd's, not the plugin's to remove
    assert "the socket stays with systemd" in plugin.log()


def test_listen_variables_meant_for_another_process_are_ignored(netns, workdir):
    """LISTEN_PID names the process systemd passed the socket to: a plugin
    that merely inherited the variables binds its own socket as usual."""
    env = dict(os.environ, LISTEN_PID="1", LISTEN_FDS="1")
    plugin = Plugin(netns, workdir, ["--vtepdev", "eth0"], env=env).start()
    try:
        assert f"serving the vxlan network driver on {plugin.socket}\n" in plugin.log()
    finally:
        assert plugin.stop(signal.SIGTERM) == 0
    assert not os.path.exists(plugin.socket)
