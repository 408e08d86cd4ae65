# The plugin's image: the files the plugin runs and nothing else, on no base.
#
# The build stage installs the plugin in a venv, its dependencies from
# requirements.lock (exact versions, hash-checked), and scripts/image-root.py
# copies out of it what the plugin runs: Python with the standard modules its
# code can import, the venv, ip, bridge, sh, and their shared libraries. The
# image is that root alone. README.md ("Image contents") says what each part costs.
#
# Two ways to build it, from this file:
# - with a registry and PyPI at hand, from the repository:
#     docker build -t docker-vxlan-plugin .
# - offline: scripts/build-image.sh makes BASE with debootstrap (a Debian
#   minbase with what the build stage needs) and a build context of the
#   wheels (the plugin's, its locked dependencies' and pip's), the lock and
#   scripts/image-root.py, then builds this file with --network none.
#
# Run it (the socket lands in the host's /run/docker/plugins, the links in the
# host's network namespace):
#   docker run -d --name docker-vxlan-plugin --restart always \
#     -v /run/docker/plugins:/run/docker/plugins \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /var/lib/docker-vxlan-plugin:/var/lib/docker-vxlan-plugin \
#     --cap-add NET_ADMIN --net=host docker-vxlan-plugin -vtepdev eth0
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
# what the build needs from Debian; debootstrap's base has it already
RUN missing=; \
    for package in python3 python3-venv iproute2 binutils; do \
        dpkg-query -W -f '${db:Status-Status}' $package 2>/dev/null | grep -qx installed \
            || missing="$missing $package"; \
    done; \
    if [ -n "$missing" ]; then \
        apt-get update && \
        apt-get install -y --no-install-recommends $missing && \
        rm -rf /var/lib/apt/lists/*; \
    fi
COPY . /context/
# pip runs from the wheel given, or from the venv; image-root.py leaves it out
RUN set -e; export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1; \
    venv=/opt/docker-vxlan-plugin; \
    if [ -d /context/wheels ]; then \
        set -- /context/wheels/pip-*.whl; \
        python3 -m venv --without-pip "$venv"; \
        pip="$venv/bin/python $1/pip install --no-index --find-links /context/wheels"; \
        plugin=docker-vxlan-plugin; \
    else \
        python3 -m venv "$venv"; \
        pip="$venv/bin/python -m pip install"; \
        plugin=/context; \
    fi; \
    $pip --require-hashes -r /context/requirements.lock; \
    $pip --no-deps "$plugin"; \
    python3 /context/scripts/image-root.py "$venv" /rootfs

FROM scratch
COPY --from=build /rootfs/ /
ENV PATH=/opt/docker-vxlan-plugin/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["docker-vxlan-plugin"]
