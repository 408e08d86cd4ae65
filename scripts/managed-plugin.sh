#!/usr/bin/env bash
# Makes a directory that `docker plugin create` turns into a managed (v2)
# plugin: DIR/config.json and DIR/rootfs, the filesystem of IMAGE (made by
# scripts/build-image.sh), taken with docker create + docker export.
#
#   scripts/managed-plugin.sh [--image IMAGE] DIR
#   docker plugin create vxlan DIR
#   docker plugin set vxlan VTEPDEV=eth0         # SCOPE=global for swarm mode
#   docker plugin enable vxlan
#   docker network create -d vxlan -o VxlanId=42 ...
#
# Settable, while the plugin is disabled:
#   SCOPE=local|global  VTEPDEV=DEV              the daemon's -scope and -vtepdev
#   args="FLAG..."                               more daemon flags, e.g. --debug
#   docker-sock.source=PATH                      the Docker API socket on the host
#   state.source=DIR                             where network options are kept
#                                                (default /var/lib/docker-vxlan-plugin)
# IMAGE defaults to docker-vxlan-plugin:latest; DOCKER_HOST selects the daemon.
set -euo pipefail

image=docker-vxlan-plugin:latest
die() { echo "managed-plugin.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --image) image=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) die "unknown argument: $1 (see --help)" ;;
    *) break ;;
  esac
done
[ $# = 1 ] || die "give one DIR (see --help)"
dir=$1
[ ! -e "$dir/rootfs" ] || die "$dir/rootfs exists; give a new directory"

mkdir -p "$dir/rootfs"
container=$(docker create "$image")
trap 'docker rm "$container" >/dev/null' EXIT
docker export "$container" | tar -C "$dir/rootfs" -x
# Docker puts the plugin's socket directory here, and mounts the state dir
mkdir -p "$dir/rootfs/run/docker/plugins" "$dir/rootfs/var/lib/docker-vxlan-plugin"

# sh turns the settable environment into flags; Docker appends args.
cat >"$dir/config.json" <<'EOF'
{
  "description": "VXLAN network driver: a vxlan per network, a macvlan per container",
  "entrypoint": ["/bin/sh", "-c",
    "exec /opt/docker-vxlan-plugin/bin/python -m vxlan --socket /run/docker/plugins/vxlan.sock -scope \"$SCOPE\" ${VTEPDEV:+-vtepdev \"$VTEPDEV\"} \"$@\"",
    "docker-vxlan-plugin"],
  "interface": {"types": ["docker.networkdriver/1.0"], "socket": "vxlan.sock"},
  "network": {"type": "host"},
  "linux": {"capabilities": ["CAP_NET_ADMIN", "CAP_NET_RAW"]},
  "env": [
    {"name": "SCOPE", "description": "local, or global for swarm mode",
     "settable": ["value"], "value": "local"},
    {"name": "VTEPDEV", "description": "underlay device of every vxlan (-vtepdev)",
     "settable": ["value"], "value": ""}
  ],
  "args": {"name": "args", "description": "more daemon flags",
           "settable": ["value"], "value": []},
  "mounts": [
    {"name": "docker-sock", "description": "the Docker API, for networks made on other hosts",
     "source": "/var/run/docker.sock", "destination": "/var/run/docker.sock",
     "type": "bind", "options": ["rbind"], "settable": ["source"]},
    {"name": "state", "description": "where network options are kept across restarts",
     "source": "/var/lib/docker-vxlan-plugin", "destination": "/var/lib/docker-vxlan-plugin",
     "type": "bind", "options": ["rbind"], "settable": ["source"]}
  ]
}
EOF
echo "managed-plugin.sh: made $dir (docker plugin create NAME $dir)"
