# The plugin's image: Debian's python3 and iproute2, and the plugin in a venv.
#
# Two ways to build it:
# - with a registry and PyPI at hand, from the repository:
#     docker build -t docker-vxlan-plugin .
# - offline: scripts/build-image.sh makes BASE with debootstrap (Debian minbase
#   with python3 and iproute2) and a build context holding only wheels/ (the
#   plugin's wheel, its dependencies' and pip's), then builds this file.
#
# Run it (the socket lands in the host's /run/docker/plugins, the links in the
# host's network namespace):
#   docker run -d --name docker-vxlan-plugin --restart always \
#     -v /run/docker/plugins:/run/docker/plugins \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /var/lib/docker-vxlan-plugin:/var/lib/docker-vxlan-plugin \
#     --cap-add NET_ADMIN --net=host docker-vxlan-plugin -vtepdev eth0
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS base
# debootstrap's base has these already; debian:bookworm-slim does not
RUN if ! command -v ip >/dev/null || ! python3 -c 'import venv' 2>/dev/null; then \
        apt-get update && \
        apt-get install -y --no-install-recommends python3 python3-venv iproute2 && \
        rm -rf /var/lib/apt/lists/*; \
    fi

FROM base AS build
COPY . /context/
# pip runs from a wheel or from ensurepip in this stage only, so it never lands
# in the image
RUN set -e; export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1; \
    if [ -d /context/wheels ]; then \
        set -- /context/wheels/pip-*.whl; \
        python3 -m venv --without-pip /opt/docker-vxlan-plugin; \
        /opt/docker-vxlan-plugin/bin/python "$1/pip" install --no-index \
            --find-links /context/wheels docker-vxlan-plugin; \
    else \
        python3 -m venv /opt/docker-vxlan-plugin; \
        /opt/docker-vxlan-plugin/bin/pip install /context; \
        /opt/docker-vxlan-plugin/bin/pip uninstall -y pip setuptools; \
    fi

FROM base
COPY --from=build /opt/docker-vxlan-plugin /opt/docker-vxlan-plugin
ENV PATH=/opt/docker-vxlan-plugin/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["docker-vxlan-plugin"]
