"""Installing the plugin the ways Docker users do, each run for real: the
image from the Dockerfile under `docker run`, the managed (v2) plugin, `pip
install .`, and the systemd units (checked by systemd-analyze; systemd does not
run here: socket activation itself is run with systemd-socket-activate in
test_robustness.py and tests/kernel/test_server.py).

The image is built inside a lab host's dockerd by scripts/build-image.sh (the
base rootfs is made once per test run, in build_cache), so nothing lands in
the machine's own Docker.
"""

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from importlib.metadata import Distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from demo import network_field, plugin_links  # scripts/demo.py
from lab import IMAGE, connects  # scripts/lab.py
from tests import rpc
from tests.wait import wait_for
from vxlan.cli import DEFAULT_SOCKET

REPO = Path(__file__).resolve().parents[2]
PLUGIN_IMAGE = "docker-vxlan-plugin:test"
MANAGED = "vxlan-managed:latest"     # not "vxlan": the image test's plugin has that name
UNIT = REPO / "scripts" / "systemd" / "docker-vxlan-plugin.service"
SOCKET_UNIT = UNIT.with_suffix(".socket")
INSTALL_PREFIX = "/opt/docker-vxlan-plugin"   # where README installs it for systemd
SOCKET_WAIT = 60.0


# --- helpers, also used by test_swarm.py -----------------------------------------

def build_image(host, build_cache):
    """Builds PLUGIN_IMAGE in host's dockerd, the base rootfs kept in build_cache."""
    host.script("build-image.sh", "--tag", PLUGIN_IMAGE, "--base-tar", build_cache / "base.tar")


def make_plugin_dir(host, directory):
    """DIR/config.json and DIR/rootfs (from PLUGIN_IMAGE), for docker plugin create."""
    host.script("managed-plugin.sh", "--image", PLUGIN_IMAGE, directory)
    return Path(directory)


def install_managed_plugin(host, name, plugin_dir, *settings):
    """docker plugin create + set + enable. The Docker socket and the state
    dir are the lab host's own, not the machine's defaults."""
    state = Path(host.dir) / "managed-state"
    state.mkdir(exist_ok=True)                 # Docker does not create a bind source
    host.docker("plugin", "create", name, plugin_dir, timeout=300)
    host.docker("plugin", "set", name, f"docker-sock.source={host.sock}",
                f"state.source={state}", *settings)
    host.docker("plugin", "enable", name, timeout=120)
    return state


def ping(host, container, address):
    done = host.docker("exec", container, "ping", "-c1", "-W2", address, check=False)
    assert done.returncode == 0, f"{container} -> {address}: {done.stdout}{done.stderr}"


def vxlan_of(host, network_id):
    links = {link["ifname"]: link for link in host.links()}
    return links.get("vx_" + network_id[:12])


def repo_options_table():
    return subprocess.run([sys.executable, "-m", "vxlan", "options"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout


# --- fixtures -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def host(lab1, build_cache):
    """The lab host, with PLUGIN_IMAGE built in its dockerd."""
    host = lab1.hosts[0]
    build_image(host, build_cache)
    return host


@pytest.fixture
def undo(host):
    """docker commands that remove what a test made (a list to append to),
    run after the test in reverse order, whatever happened."""
    removals = []
    yield removals
    for args in reversed(removals):
        host.docker(*args, check=False)


def story(host, undo, driver, vxlan_id):
    """The driver's user story: a network, two containers that ping each
    other over its vxlan, then nothing left once they and it are removed."""
    net = f"net{vxlan_id}"
    undo.append(("network", "rm", net))
    network_id = host.docker(
        "network", "create", "-d", driver, "-o", f"VxlanId={vxlan_id}",
        "-o", f"Group=239.1.1.{vxlan_id}", "--subnet", f"10.{vxlan_id}.0.0/24",
        "--gateway", f"10.{vxlan_id}.0.254", net).stdout.strip()
    for name in ("a", "b"):
        undo.append(("rm", "-f", f"{net}-{name}"))
        host.docker("run", "-d", "--name", f"{net}-{name}", "--net", net, IMAGE, "sleep", "600")
    ping(host, f"{net}-a", network_field(host, f"{net}-b", net))
    ping(host, f"{net}-b", network_field(host, f"{net}-a", net))
    vxlan = vxlan_of(host, network_id)
    assert vxlan["linkinfo"]["info_data"]["id"] == vxlan_id
    assert vxlan["linkinfo"]["info_data"]["link"] == "eth0"  # -vtepdev reached the daemon
    assert plugin_links(host) == ["vx_" + network_id[:12]]   # the macvlans are in the containers
    host.docker("rm", "-f", f"{net}-a", f"{net}-b")
    host.docker("network", "rm", net)
    assert plugin_links(host) == []
    return network_id


def wait_for_socket(path):
    wait_for(lambda: connects(str(path)), SOCKET_WAIT, f"something to serve on {path}")


# --- the image ----------------------------------------------------------------------

def test_image_holds_the_plugin_ip_and_python_and_no_pip(host):
    def in_image(*command):
        return host.docker("run", "--rm", "--network", "none", "--entrypoint", command[0],
                           PLUGIN_IMAGE, *command[1:]).stdout

    assert in_image("docker-vxlan-plugin", "options") == repo_options_table()
    assert in_image("python3", "-c", "import gevent, bottle, sh, docker, vxlan, "
                    "importlib.util as u; print(u.find_spec('pip'))").strip() == "None"
    assert "ip utility" in in_image("ip", "-V")
    assert "bridge utility" in in_image("bridge", "-V")
    config = json.loads(host.docker("image", "inspect", PLUGIN_IMAGE).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["docker-vxlan-plugin"]


def test_image_runs_the_driver_under_docker_run(host, undo):
    """`docker run -v /run/docker/plugins:/run/docker/plugins -v
    /var/run/docker.sock:... --net=host IMAGE -vtepdev eth0`, as the README
    says; --cap-add NET_ADMIN stands for --privileged, which runc cannot grant
    on this machine (its capability bounding set lacks CAP_SYS_RESOURCE)."""
    state = Path(host.dir) / "image-state"
    state.mkdir()
    undo.append(("rm", "-f", "vxlan-plugin"))
    host.docker("run", "-d", "--name", "vxlan-plugin",
                "-v", "/run/docker/plugins:/run/docker/plugins",
                "-v", f"{host.sock}:/var/run/docker.sock",
                "-v", f"{state}:/var/lib/docker-vxlan-plugin",
                "--cap-add", "NET_ADMIN", "--net=host", PLUGIN_IMAGE, "-vtepdev", "eth0")
    # dockerd took /run/docker/plugins from its own mount namespace: the
    # socket is in the lab host's private /run/docker/plugins
    plugin_socket = Path(f"/proc/{host.dockerd_pid}/root/run/docker/plugins/vxlan.sock")
    try:
        wait_for_socket(plugin_socket)
        story(host, undo, "vxlan", 42)
        assert (state / "networks").is_dir()      # its state went to the host's dir
        host.docker("stop", "-t", "15", "vxlan-plugin")   # SIGTERM: it removes its socket
        assert not plugin_socket.exists()
    finally:
        logs = host.docker("logs", "vxlan-plugin", check=False)
        print(logs.stdout[-4000:], logs.stderr[-4000:])


# --- the managed plugin ------------------------------------------------------------------

@pytest.fixture(scope="module")
def plugin_dir(host, tmp_path_factory):
    directory = tmp_path_factory.mktemp("managed")
    try:
        yield make_plugin_dir(host, directory / "plugin")
    finally:
        shutil.rmtree(directory)


def test_managed_plugin_dir_is_what_docker_plugin_create_takes(plugin_dir):
    config = json.loads((plugin_dir / "config.json").read_text())
    assert config["interface"] == {"types": ["docker.networkdriver/1.0"], "socket": "vxlan.sock"}
    assert config["network"] == {"type": "host"}
    # NET_ADMIN for the links; NET_RAW for the announcements (Docker grants it
    # by default today, but a site may drop it from the defaults)
    assert {"CAP_NET_ADMIN", "CAP_NET_RAW"} <= set(config["linux"]["capabilities"])
    assert {m["destination"] for m in config["mounts"]} == {
        "/var/run/docker.sock", "/var/lib/docker-vxlan-plugin"}
    assert os.listdir(plugin_dir / "rootfs" / "run" / "docker" / "plugins") == []
    assert (plugin_dir / "rootfs" / "opt" / "docker-vxlan-plugin" / "bin" / "python").exists()


def test_managed_plugin_create_enable_use_disable_remove(host, undo, plugin_dir):
    undo.append(("plugin", "rm", "-f", MANAGED))
    state = install_managed_plugin(host, MANAGED, plugin_dir, "VTEPDEV=eth0")
    listed = json.loads(host.docker("plugin", "inspect", MANAGED).stdout)[0]
    assert listed["Enabled"] is True
    assert "VTEPDEV=eth0" in listed["Settings"]["Env"]

    undo.append(("network", "rm", "net43"))
    network_id = host.docker("network", "create", "-d", MANAGED, "-o", "VxlanId=43",
                             "--subnet", "10.43.0.0/24", "net43").stdout.strip()
    # the options are kept in the state dir mounted from the host
    record = state / "networks" / f"{network_id}.json"
    assert json.loads(record.read_text())["options"]["VxlanId"] == "43"
    host.docker("network", "rm", "net43")
    assert not record.exists()

    story(host, undo, MANAGED, 44)
    # it may announce (CAP_NET_RAW), and did; dockerd logs what the plugin prints
    assert "ok  announce 10.44.0." in Path(host.dockerd_log).read_text()

    host.docker("plugin", "disable", MANAGED)
    host.docker("plugin", "rm", MANAGED)
    assert host.docker("plugin", "ls", "-q").stdout.strip() == ""


# --- pip and systemd -------------------------------------------------------------------

def copy_of_tree(destination):
    """This tree without what git ignores (build/ and *.egg-info stay out of it)."""
    shutil.copytree(REPO, destination, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        ".hypothesis", ".benchmarks"))
    return destination


def fresh_venv(path):
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    return path


def pip(venv, *args):
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args],
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def pip_installed():
    """A fresh venv in a temp dir with the plugin installed as README says:
    the locked dependencies, then `pip install --no-deps .` of a copy of this tree."""
    tmp = Path(tempfile.mkdtemp(prefix="dvl-pip-"))
    try:
        source = copy_of_tree(tmp / "source")
        venv = fresh_venv(tmp / "venv")
        pip(venv, "--require-hashes", "-r", source / "requirements.lock")
        pip(venv, "--no-deps", source)
        yield venv
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def sdist():
    """The source distribution, built by PyPA's `build` from a copy of this tree."""
    tmp = Path(tempfile.mkdtemp(prefix="dvl-sdist-"))
    try:
        source = copy_of_tree(tmp / "source")
        done = subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir",
                               str(tmp / "dist"), str(source)], capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        (archive,) = (tmp / "dist").glob("*.tar.gz")
        yield archive
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_sdist_installs_in_a_fresh_venv(sdist, tmp_path):
    """`pip install` of the sdist, its dependencies taken from the index in
    requirements.txt's ranges; the command and `python -m vxlan` both work."""
    venv = fresh_venv(tmp_path / "venv")
    pip(venv, sdist)
    python = venv / "bin" / "python"
    for argv in ([venv / "bin" / "docker-vxlan-plugin", "options"],
                 [python, "-m", "vxlan", "options"]):
        assert subprocess.run(argv, capture_output=True, text=True,
                              check=True).stdout == repo_options_table()
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (installed,) = Distribution.discover(name="docker-vxlan-plugin", path=[site])
    # one version, vxlan/__init__.py's, everywhere
    version = re.search(r'^__version__ = "(.+)"$', (REPO / "vxlan" / "__init__.py").read_text(),
                        re.M).group(1)
    assert installed.version == version
    assert sdist.name == f"docker_vxlan_plugin-{version}.tar.gz"
    # the ranges in requirements.txt are the ones declared
    declared = [line for line in (REPO / "requirements.txt").read_text().splitlines()
                if line and not line.startswith("#")]
    assert [str(Requirement(r)) for r in installed.requires] == [
        str(Requirement(line)) for line in declared]


def test_pip_install_gives_the_command_and_it_serves(pip_installed, tmp_path):
    command = pip_installed / "bin" / "docker-vxlan-plugin"
    assert subprocess.run([command, "options"], capture_output=True, text=True,
                          check=True).stdout == repo_options_table()
    # serve, in a network namespace of its own (unshare -n: it vanishes with
    # the process), and answer Docker's first calls
    sock = tmp_path / "vxlan.sock"
    log = open(tmp_path / "plugin.log", "w+")
    plugin = subprocess.Popen(["unshare", "-n", "--", command, "--socket", sock,
                               "--state-dir", tmp_path / "state"],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_socket(sock)
        assert rpc.call(str(sock), "Plugin.Activate") == (200, {"Implements": ["NetworkDriver"]})
        assert rpc.call(str(sock), "NetworkDriver.GetCapabilities")[1]["Scope"] == "local"
        plugin.send_signal(signal.SIGTERM)
        assert plugin.wait(30) == 0
        assert not sock.exists()
    finally:
        if plugin.poll() is None:
            plugin.kill()
            plugin.wait(10)
        log.seek(0)
        print(log.read()[-4000:])
        log.close()


def read_unit(path):
    # strict=False: a key may repeat (SystemCallFilter); the last one is kept
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str                     # systemd keys are case-sensitive
    unit.read(path)
    return unit


def test_systemd_socket_is_there_before_docker_and_root_only():
    socket_unit = read_unit(SOCKET_UNIT)
    assert socket_unit["Socket"]["ListenStream"] == DEFAULT_SOCKET
    assert socket_unit["Socket"]["SocketMode"] == "0600"
    assert socket_unit["Unit"]["Before"].split() == ["docker.service"]
    assert socket_unit["Install"]["WantedBy"].split() == ["sockets.target"]


def test_systemd_service_takes_the_socket_and_restarts():
    unit = read_unit(UNIT)
    assert unit["Unit"]["Requires"].split() == [SOCKET_UNIT.name]
    assert SOCKET_UNIT.name in unit["Unit"]["After"].split()
    assert unit["Unit"]["Before"].split() == ["docker.service"]  # stops after dockerd
    assert unit["Service"]["Restart"] == "on-failure"
    exec_start = shlex.split(unit["Service"]["ExecStart"])
    assert exec_start[0] == f"{INSTALL_PREFIX}/bin/docker-vxlan-plugin"


def test_systemd_service_is_root_with_net_admin_and_raw_only_and_writes_only_its_own_dirs():
    service = read_unit(UNIT)["Service"]
    # NET_RAW and packet sockets: the announcements (on by default)
    assert service["CapabilityBoundingSet"].split() == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert "AF_PACKET" in service["RestrictAddressFamilies"].split()
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert (service["StateDirectory"], service["LogsDirectory"]) == ("docker-vxlan-plugin",) * 2
    assert "ReadWritePaths" not in service
    # the host's network namespace, and /proc of other processes stays readable
    for key in ("PrivateNetwork", "PrivateUsers", "ProtectProc", "ProcSubset"):
        assert key not in service
    assert "net" in service["RestrictNamespaces"].split()        # setns into a container's


def systemd_analyze():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return analyze


def test_systemd_units_verify_against_a_pip_installed_plugin(pip_installed, tmp_path):
    """systemd-analyze verify checks every key and that ExecStart's command is
    executable: here the unit's install prefix is replaced by the fresh venv's.
    (Starting it under systemd is not tested: systemd does not run here.)"""
    analyze = systemd_analyze()
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALL_PREFIX, str(pip_installed)))
    shutil.copy(SOCKET_UNIT, tmp_path)
    done = subprocess.run([analyze, "verify", SOCKET_UNIT.name, unit.name],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    # the command systemd would start, asked for its help
    argv = [word for word in shlex.split(read_unit(unit)["Service"]["ExecStart"])
            if not word.startswith("$")]
    assert subprocess.run(argv + ["--help"], capture_output=True).returncode == 0


def test_systemd_service_exposure_stays_low():
    """systemd-analyze security rates the sandbox from 0 (locked down) to 10;
    the service scored 2.1 when it was hardened (9.6 before), 2.4 with the
    packet sockets of the announcements. What it still reports is what the
    plugin needs: root, CAP_NET_ADMIN, the host's network, netlink, unix, IP
    and packet sockets, /proc of other processes."""
    done = subprocess.run([systemd_analyze(), "security", "--offline=yes", "--threshold=25",
                           UNIT.name], capture_output=True, text=True, cwd=UNIT.parent,
                          timeout=60)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
