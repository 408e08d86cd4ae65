#!/usr/bin/env bash
# Installs what the benchmarks need (scripts/install.sh --test, and py-spy in the
# venv for --profile), then runs them:
#   scripts/bench.sh [--out FILE] [--only SECTIONS] [--runs N] [--profile DIR]
# As root. Prints a table and writes the figures as JSON (default
# benchmarks/results.json). See scripts/bench.py for what is measured.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
bash scripts/install.sh --test
if [ ! -x "$REPO/.venv/bin/py-spy" ]; then
  "$REPO/.venv/bin/python" -m pip --disable-pip-version-check --no-input -q install "py-spy>=0.3"
fi
exec "$REPO/.venv/bin/python" scripts/bench.py "$@"
