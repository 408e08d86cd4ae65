#!/usr/bin/env bash
# Installs what is missing (scripts/install.sh), then runs the plugin with the
# given flags: scripts/run-plugin.sh [plugin flags...]   (--help lists them)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$REPO/scripts/install.sh"
exec "$REPO/.venv/bin/docker-vxlan-plugin" "$@"
