"""scripts/install.sh --test where the suite's own machine (Debian 12) cannot
show it: on a host whose Docker comes from Docker's own packages, and on
Debian 13, whose docker.io comes without the docker CLI. It runs for real, as
root in a chroot of Debian 13 (lab.debian_root, cached between runs) under a
copy-on-write overlay, so the cached root stays as it was.

Docker's packages cannot be fetched here (no registry but Debian's and
PyPI): their stand-ins are packages of the same names, conflicts and
commands, built with dpkg-deb, whose commands only print a version.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import lab as lablib  # scripts/lab.py

REPO = Path(__file__).resolve().parents[2]
RELEASE = "trixie"                # Debian 13
INSTALL_TIMEOUT = 900.0
# Docker's packages: what each ships of the engine, and what it conflicts with
DOCKER_CE = {
    "containerd.io": (["containerd", "runc"], "containerd, runc"),
    "docker-ce": (["dockerd"], "docker.io, docker-engine"),
    "docker-ce-cli": (["docker"], "docker.io"),
}


class Root:
    """A Debian root to run commands in: an overlay on a cached root."""

    def __init__(self, path, lower):
        self.upper, self.work, self.merged = (path / d for d in ("upper", "work", "merged"))
        for directory in (self.upper, self.work, self.merged):
            directory.mkdir()
        self.mounts = (f"mount -t overlay overlay -o lowerdir={lower},upperdir={self.upper},"
                       f"workdir={self.work} \"$ROOT\"")

    def run(self, *cmd, timeout=120.0):
        # pip in the root must trust what this machine's HTTPS goes through
        return lablib.in_root(self.merged, cmd, mounts=self.mounts, timeout=timeout,
                              check=False, env={"PIP_CERT": "/host-ca.crt"})

    def install(self):
        """Runs scripts/install.sh --test from the copy of the source in /src."""
        return self.run("bash", "/src/scripts/install.sh", "--test", timeout=INSTALL_TIMEOUT)

    def installed(self, package):
        done = self.run("dpkg-query", "-W", "-f", "${Status}", package)
        return done.stdout == "install ok installed"


@pytest.fixture
def debian13(tmp_path):
    """A Debian 13 minbase with this source tree in /src, as a user has it."""
    if os.geteuid() != 0:
        pytest.skip("chroots need root")
    root = Root(tmp_path, lablib.debian_root(RELEASE))
    shutil.copytree(REPO, root.upper / "src", symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache",
        ".hypothesis", ".benchmarks"))
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root.upper / "host-ca.crt")
    return root


def docker_ce_package(directory, name):
    """A stand-in for Docker's package NAME (see DOCKER_CE), built with dpkg-deb."""
    commands, conflicts = DOCKER_CE[name]
    tree = directory / name
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 99.0.0-stand-in\nArchitecture: all\n"
        f"Maintainer: docker-vxlan-plugin tests <tests@invalid>\n"
        f"Conflicts: {conflicts}\nReplaces: {conflicts}\n"
        f"Description: stand-in for Docker's {name}\n")
    (tree / "usr" / "bin").mkdir(parents=True)
    for command in commands:
        script = tree / "usr" / "bin" / command
        script.write_text(f"#!/bin/sh\necho '{command} 99.0.0, a stand-in'\n")
        script.chmod(0o755)
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree),
                    str(directory / f"{name}.deb")], check=True, capture_output=True)
    return f"/{directory.name}/{name}.deb"


def test_on_debian_13_beside_docker_ce_then_with_debian_docker(debian13):
    """Docker's packages there: install.sh stops while their CLI is missing,
    saying what to do, then uses their engine; once they are purged, as its
    message says, it installs docker.io and Debian 13's docker-cli."""
    debs = debian13.upper / "debs"
    debs.mkdir()
    engine = [docker_ce_package(debs, name) for name in ("containerd.io", "docker-ce")]
    assert debian13.run("dpkg", "-i", *engine).returncode == 0

    stopped = debian13.install()
    assert stopped.returncode == 1
    assert ("install.sh: Docker's own packages are installed (docker-ce containerd.io), and "
            "this script does not replace them with Debian's docker.io; but the tests need "
            "their engine whole, and 'docker' is missing. Install docker-ce, docker-ce-cli "
            "and containerd.io from Docker's repository, or remove Docker's packages "
            "(apt-get purge docker-ce docker-ce-cli containerd.io) to have this script "
            "install Debian's docker.io.") in stopped.stderr
    assert not debian13.installed("python3")          # it stopped before installing anything

    assert debian13.run("dpkg", "-i", docker_ce_package(debs, "docker-ce-cli")).returncode == 0
    done = debian13.install()
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("install.sh: using the Docker engine of Docker's packages "
            "(docker-ce docker-ce-cli containerd.io)") in done.stdout
    assert all(debian13.installed(p) for p in ("docker-ce", "docker-ce-cli", "containerd.io",
                                               "busybox-static", "debootstrap"))
    assert not debian13.installed("docker.io") and not debian13.installed("docker-cli")
    assert debian13.run("docker", "--version").stdout == "docker 99.0.0, a stand-in\n"
    options = debian13.run("/src/.venv/bin/docker-vxlan-plugin", "options")
    assert options.returncode == 0 and "VxlanId" in options.stdout, options.stderr

    purged = debian13.run("apt-get", "purge", "-y", "docker-ce", "docker-ce-cli",
                          "containerd.io")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    done = debian13.install()
    assert done.returncode == 0, done.stdout + done.stderr
    assert debian13.installed("docker.io") and debian13.installed("docker-cli")
    assert debian13.run("docker", "--version").stdout.startswith("Docker version 26.")
    assert debian13.run("dockerd", "--version").stdout.startswith("Docker version 26.")
    again = debian13.install()           # safe to run again: nothing left to install
    assert again.returncode == 0, again.stdout + again.stderr
    assert "apt-get install" not in again.stdout
