#!/usr/bin/env bash
# Installs what the plugin needs, as root on Debian 12, 13 or unstable, and
# the plugin itself into $REPO/.venv: its dependencies from requirements.lock
# (exact versions, hash-checked), then the plugin (pip install -e --no-deps).
# Safe to run again: it only installs what is missing, and reinstalls into the
# venv only when the packaging or a lock changed.
#
#   scripts/install.sh          the plugin: iproute2, python3 + venv
#   scripts/install.sh --test   also what the tests need: docker.io (and docker-cli,
#                               its CLI from Debian 13 on), busybox-static, iptables,
#                               iperf3, iputils-ping (ping -M do), debootstrap,
#                               systemd (systemd-socket-activate, systemd-analyze),
#                               logrotate (the audit log's rotation), and
#                               requirements-test.lock in the venv
#                               (same as INSTALL_TEST=1). Where Docker's own packages
#                               (docker-ce, containerd.io) are installed, it uses
#                               their engine instead of docker.io.
#
# PYTHON=/path/to/python3 picks the interpreter the venv is made from.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$REPO/.venv
with_test=${INSTALL_TEST:-0}

die() { echo "install.sh: $*" >&2; exit 1; }
trap 'echo "install.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

for arg in "$@"; do
  case $arg in
    --test) with_test=1 ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root (it installs Debian packages)"

# Quiet when it works; the whole output when it fails.
quiet() {
  local log rc=0
  log=$(mktemp)
  "$@" >"$log" 2>&1 || rc=$?
  if [ $rc != 0 ]; then cat "$log" >&2; rm -f "$log"; die "failed ($rc): $*"; fi
  rm -f "$log"
}

# --- Debian packages ----------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
apt_install() {
  echo "install.sh: apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  if [ "${apt_updated:-0}" = 0 ]; then quiet apt-get update; apt_updated=1; fi
  # --no-install-recommends: docker.io would pull needrestart, git, apparmor...
  quiet apt-get install -y --no-install-recommends "$@"
}

packages=(iproute2 python3 python3-venv python3-pip)
[ "$with_test" = 1 ] && packages+=(busybox-static iptables iperf3 iputils-ping debootstrap systemd
                                     logrotate)

# The tests' Docker engine: Debian's docker.io, unless Docker's own packages
# are installed: docker.io would replace them (they conflict), so use theirs.
docker_ce=()
for p in docker-ce docker-ce-cli containerd.io; do
  if installed "$p"; then docker_ce+=("$p"); fi
done
if [ "$with_test" = 1 ] && [ ${#docker_ce[@]} -gt 0 ]; then
  for command in dockerd containerd runc docker; do
    command -v "$command" >/dev/null || die "Docker's own packages are installed" \
      "(${docker_ce[*]}), and this script does not replace them with Debian's docker.io;" \
      "but the tests need their engine whole, and '$command' is missing. Install" \
      "docker-ce, docker-ce-cli and containerd.io from Docker's repository, or remove" \
      "Docker's packages (apt-get purge docker-ce docker-ce-cli containerd.io) to have" \
      "this script install Debian's docker.io."
  done
  echo "install.sh: using the Docker engine of Docker's packages (${docker_ce[*]})"
elif [ "$with_test" = 1 ]; then
  packages+=(docker.io)
fi

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi
# From Debian 13 on, the docker CLI is the package docker-cli, which docker.io
# only recommends. (Debian's is /usr/bin/docker; another client may come first on PATH.)
if [ "$with_test" = 1 ] && [ ${#docker_ce[@]} = 0 ] && [ ! -x /usr/bin/docker ]; then
  apt_install docker-cli
fi

# --- the venv -------------------------------------------------------------------
python=${PYTHON:-python3}
command -v "$python" >/dev/null || die "$python not found"
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$VENV"
  "$python" -m venv "$VENV" || die "could not make a venv with $python"
fi

# What the venv was made from: reinstall when any of it changes.
stamp_of() {
  {
    "$VENV/bin/python" -VV
    for f in "$@"; do
      if [ -f "$REPO/$f" ]; then echo "$f"; cat "$REPO/$f"; fi
    done
  } | sha256sum | cut -d' ' -f1
}
pip() { quiet "$VENV/bin/python" -m pip --disable-pip-version-check --no-input "$@"; }

stamp=$(stamp_of setup.py pyproject.toml requirements.txt requirements.lock)
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$stamp" ] \
   || [ ! -x "$VENV/bin/docker-vxlan-plugin" ]; then
  [ -f "$REPO/requirements.lock" ] || die "no requirements.lock in $REPO (scripts/lock.sh makes it)"
  pip install --require-hashes -r "$REPO/requirements.lock"
  pip install --no-deps -e "$REPO"
  echo "$stamp" >"$VENV/.installed"
fi

if [ "$with_test" = 1 ]; then
  stamp=$(stamp_of requirements-test.lock)
  if [ "$(cat "$VENV/.installed-test" 2>/dev/null)" != "$stamp" ]; then
    pip install --require-hashes -r "$REPO/requirements-test.lock"
    echo "$stamp" >"$VENV/.installed-test"
  fi
fi
