#!/usr/bin/env bash
# Builds the plugin's Docker image from the top-level Dockerfile, with no
# registry: as root on Debian, with debootstrap, pip and a docker CLI.
#
#   scripts/build-image.sh [--tag TAG] [--base-tar FILE]
#
#   --tag TAG        the image to make (default docker-vxlan-plugin:latest)
#   --base-tar FILE  keep the base rootfs as FILE and reuse it if it exists
#                    (debootstrap takes about a minute; a FILE made before the
#                    base had binutils fails the build)
#
# 1. The build stage's base image docker-vxlan-plugin-build:bookworm (skipped
#    if the daemon has it): debootstrap --variant=minbase with python3,
#    python3-venv, iproute2 and binutils, from the Debian mirror in
#    /etc/apt/sources* (MIRROR=URL overrides), less apt's caches and the
#    docs, then `docker import`. None of it is in the image but what
#    scripts/image-root.py copies out.
# 2. The wheels, on this host: the plugin's own (from a copy of the source, so
#    the tree stays clean), its dependencies' from requirements.lock (hashes
#    checked) and pip's, downloaded for the base image's Python, libc and
#    machine (HTTPS from containers may not work; the image then builds
#    without any network).
# 3. docker build --network none, with a context of those wheels, the lock and
#    scripts/image-root.py; then it prints what each part of the image costs.
#
# The daemon is the docker CLI's: DOCKER_HOST selects another. PYTHON is the
# python3 with pip that builds and downloads wheels (default: REPO/.venv's,
# else python3).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=bookworm
BASE=docker-vxlan-plugin-build:$SUITE
tag=docker-vxlan-plugin:latest
base_tar=

die() { echo "build-image.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --tag) tag=${2:?}; shift 2 ;;
    --base-tar) base_tar=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

python=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$python" ] || python=python3
work=$(mktemp -d /tmp/docker-vxlan-plugin-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
export DOCKER_BUILDKIT=0   # the classic builder: no buildx needed, --network none works

debian_mirror() {
  # the first Debian archive (not -security) that apt uses here
  local files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    if [ -f "$f" ]; then files+=("$f"); fi
  done
  [ ${#files[@]} -gt 0 ] || return 0
  awk '($1 == "URIs:" || $1 == "deb") {
         for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; exit }
       }' "${files[@]}"
}

make_base_tar() {
  local out=$1 rootfs=$work/rootfs mirror
  command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
  mirror=${MIRROR:-$(debian_mirror)}
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "build-image.sh: debootstrap $SUITE from $mirror"
  debootstrap --variant=minbase --include=python3,python3-venv,iproute2,binutils \
    "$SUITE" "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  # the build needs neither apt's downloads and lists nor the docs
  rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  # Docker provides /dev, /proc and /sys in every container
  tar -C "$rootfs" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' \
    --exclude='./sys/*' -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  rm -rf "$rootfs"
}

# --- 1. the base image ------------------------------------------------------------
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  tar_file=${base_tar:-$work/base.tar}
  [ -s "$tar_file" ] || make_base_tar "$tar_file"
  docker import -c 'CMD ["python3"]' "$tar_file" "$BASE" >/dev/null
fi

# --- 2. the wheels ------------------------------------------------------------------
# What the base image runs: Python X.Y, glibc 2.N, the machine.
read -r py_version glibc_minor machine < <(docker run --rm --network none "$BASE" python3 -c \
  'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.libc_ver()[1].split(".")[1], platform.machine())')
[ -n "${machine:-}" ] || die "could not ask python3 in $BASE what it runs on"
abi=cp${py_version/./}
platforms=()
for ((n = glibc_minor; n >= 17; n--)); do platforms+=(--platform "manylinux_2_${n}_$machine"); done
platforms+=(--platform "manylinux2014_$machine")   # also accepts manylinux2010 and manylinux1

context=$work/context
mkdir -p "$work/source" "$context/wheels" "$context/scripts"
tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' \
  --exclude=__pycache__ -c . | tar -C "$work/source" -x
pip() { "$python" -m pip --disable-pip-version-check --no-input -q "$@"; }
pip wheel --no-deps --wheel-dir "$context/wheels" "$work/source"
download() {
  pip download --dest "$context/wheels" --only-binary=:all: --implementation cp \
    --python-version "$py_version" --abi "$abi" "${platforms[@]}" "$@"
}
download --require-hashes -r "$REPO/requirements.lock"
download pip   # the installer: it runs in the build stage only

# --- 3. the image ---------------------------------------------------------------------
cp "$REPO/Dockerfile" "$REPO/requirements.lock" "$context/"
cp "$REPO/scripts/image-root.py" "$context/scripts/"
docker build --network none --build-arg "BASE=$BASE" -t "$tag" "$context" \
  >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; die "docker build failed"; }
sed -n '/^image contents/,/ total, of which/p' "$work/build.log"
echo "build-image.sh: built $tag ($(docker image ls --format '{{.Size}}' "$tag"))"
