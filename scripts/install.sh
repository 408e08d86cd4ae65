#!/usr/bin/env bash
# Installs what the plugin needs, as root on Debian 12 or 13, and the plugin
# itself into $REPO/.venv (pip install -e). Safe to run again: it only installs
# what is missing, and reinstalls into the venv only when setup.py or a
# requirements file changed.
#
#   scripts/install.sh          the plugin: iproute2, python3 + venv
#   scripts/install.sh --test   also what the tests need: docker.io, busybox-static,
#                               iptables, iperf3, iputils-ping (ping -M do), debootstrap,
#                               systemd (systemd-socket-activate, systemd-analyze),
#                               logrotate (the audit log's rotation), and
#                               requirements-test.txt in the venv
#                               (same as INSTALL_TEST=1)
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
packages=(iproute2 python3 python3-venv python3-pip)
[ "$with_test" = 1 ] && packages+=(docker.io busybox-static iptables iperf3 iputils-ping debootstrap systemd
                              logrotate)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  quiet apt-get update
  # --no-install-recommends: docker.io would pull needrestart, git, apparmor...
  quiet apt-get install -y --no-install-recommends "${missing[@]}"
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

stamp=$(stamp_of setup.py setup.cfg pyproject.toml requirements.txt)
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$stamp" ] \
   || [ ! -x "$VENV/bin/docker-vxlan-plugin" ]; then
  [ -f "$REPO/setup.py" ] || [ -f "$REPO/pyproject.toml" ] || die "no setup.py in $REPO"
  pip install -e "$REPO"
  echo "$stamp" >"$VENV/.installed"
fi

if [ "$with_test" = 1 ]; then
  stamp=$(stamp_of requirements-test.txt)
  if [ "$(cat "$VENV/.installed-test" 2>/dev/null)" != "$stamp" ]; then
    pip install -r "$REPO/requirements-test.txt"
    echo "$stamp" >"$VENV/.installed-test"
  fi
fi
