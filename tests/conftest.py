"""Shared fixtures: labs of Docker hosts in network namespaces (scripts/lab.py).

lab1 / lab2 / lab3 give a lab of 1 / 2 / 3 hosts (module-scoped), each with its own
dockerd and the busybox-local:latest image; the lab is torn down after the
module, whatever happened.  engine_lab2 is lab2 once on each Docker engine
the suite runs (ENGINES).  They skip only when not root; anything else that
stops a lab from coming up is an error.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import lab as lablib  # noqa: E402  (scripts/lab.py)


# The Docker engines the suite runs: the machine's docker.io (Engine 20.10 on
# Debian 12), and Debian 13's (26) and unstable's (28) from cached roots.
ENGINES = {"machine": None, "trixie": "trixie", "sid": "sid"}


def _lab(n, engine=None):
    if os.geteuid() != 0:
        pytest.skip("a lab of Docker hosts needs root")
    with lablib.Lab(n, engine=engine) as lab:
        yield lab


@pytest.fixture(scope="module")
def lab1():
    """A lab of one Docker host: lab1.hosts[0]."""
    yield from _lab(1)


@pytest.fixture(scope="module")
def lab2():
    """A lab of two Docker hosts on one underlay: h1, h2 = lab2.hosts."""
    yield from _lab(2)


@pytest.fixture(scope="module", params=list(ENGINES.values()), ids=list(ENGINES))
def engine_lab2(request):
    """A lab of two Docker hosts on each engine of ENGINES in turn (a module's
    tests run on one engine, then on the next)."""
    yield from _lab(2, request.param)


@pytest.fixture(scope="module")
def lab3():
    """A lab of three Docker hosts on one underlay: h1, h2, h3 = lab3.hosts."""
    yield from _lab(3)


@pytest.fixture(scope="session")
def build_cache():
    """A directory that test modules share for one run, for what is slow to
    build (the plugin image's base rootfs: debootstrap takes a minute); removed
    at the end of the run."""
    path = tempfile.mkdtemp(prefix="dvl-build-")
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)
