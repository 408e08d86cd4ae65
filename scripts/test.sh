#!/usr/bin/env bash
# Installs what the tests need (scripts/install.sh --test), then runs them:
#   scripts/test.sh [pytest args...]     all of tests/, or the paths given:
#   scripts/test.sh tests/e2e -x         e.g.
# As root. No Docker daemon needs to run: the end-to-end tests start their own
# dockerd per test host, in network namespaces (scripts/lab.py).
# Exits with pytest's status (5, "no tests ran", counts as a failure).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
bash scripts/install.sh --test

where=(tests/)
for arg in "$@"; do
  case $arg in
    -*) ;;
    *) if [ -e "${arg%%::*}" ]; then where=(); fi ;;
  esac
done
exec "$REPO/.venv/bin/python" -m pytest "${where[@]}" -q "$@"
