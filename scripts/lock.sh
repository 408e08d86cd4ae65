#!/usr/bin/env bash
# Rewrites the locks: requirements.lock from requirements.txt (what the plugin
# needs) and requirements-test.lock from requirements-test.txt (what the tests
# need, held to the plugin's pins). Each pins every package, dependencies of
# dependencies too, to one version with the sha256 of each of its files on
# the index, so `pip install --require-hashes -r requirements.lock` installs
# the same bytes everywhere. The image, scripts/install.sh (and so CI) and the
# README's pip install use them.
#
#   scripts/lock.sh                       every package to its newest version in range
#   scripts/lock.sh -P gevent [-P ...]    only these (pip-compile --upgrade-package)
#
# It runs pip-tools' pip-compile from a throwaway venv, on PYTHON (default
# python3): the Python the pins must suit (markers are evaluated for it).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIP_TOOLS="pip-tools==7.6.2"

die() { echo "lock.sh: $*" >&2; exit 1; }
upgrade=(--upgrade)
while [ $# -gt 0 ]; do
  case $1 in
    -P|--upgrade-package) upgrade+=(--upgrade-package "${2:?}"); shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
# -P alone moves only the packages named
[ ${#upgrade[@]} = 1 ] || upgrade=("${upgrade[@]:1}")

work=$(mktemp -d /tmp/docker-vxlan-plugin-lock.XXXXXX)
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3}" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$PIP_TOOLS"

compile() {  # compile DIR INPUT OUTPUT [pip-compile args]: INPUT in DIR, OUTPUT in REPO
  local dir=$1 input=$2 output=$3
  shift 3
  (cd "$dir" && "$work/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe \
     --strip-extras --no-header --no-emit-index-url --no-emit-find-links \
     --no-emit-trusted-host "${upgrade[@]}" "$@" --output-file "$REPO/$output" "$input")
  { echo "# Made by scripts/lock.sh from $input: do not edit; run scripts/lock.sh."
    grep -v '^# Made by scripts/lock.sh' "$REPO/$output"; } >"$work/out"
  cat "$work/out" >"$REPO/$output"
}

compile "$REPO" requirements.txt requirements.lock
# The test tools are held to the plugin's pins (hashes left out: a constraint
# names versions). From $work, so that the lock says "-c requirements.lock".
grep -E '^[A-Za-z0-9._-]+==' "$REPO/requirements.lock" | sed 's/ .*//' >"$work/requirements.lock"
cp "$REPO/requirements-test.txt" "$work/"
compile "$work" requirements-test.txt requirements-test.lock --constraint requirements.lock
echo "lock.sh: wrote requirements.lock and requirements-test.lock"
