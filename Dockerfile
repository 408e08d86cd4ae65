# The plugin's image: Debian's python3 and iproute2, and the plugin in a venv.
#
# Built offline by scripts/build-image.sh, which makes BASE (Debian minbase
# with python3 and iproute2, from debootstrap) and a build context holding
# only wheels/: the plugin's wheel, its dependencies' and pip's.
#
# Run it (the socket lands in the host's /run/docker/plugins, the links in the
# host's network namespace):
#   docker run -d --name docker-vxlan-plugin --restart always \
#     -v /run/docker/plugins:/run/docker/plugins \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /var/lib/docker-vxlan-plugin:/var/lib/docker-vxlan-plugin \
#     --cap-add NET_ADMIN --net=host docker-vxlan-plugin -vtepdev eth0
ARG BASE=docker-vxlan-plugin-base:bookworm

FROM ${BASE} AS build
COPY wheels/ /wheels/
# pip runs from its own wheel, so it never lands in the image
RUN set -e; set -- /wheels/pip-*.whl; \
    python3 -m venv --without-pip /opt/docker-vxlan-plugin; \
    PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/docker-vxlan-plugin/bin/python "$1/pip" install \
        --no-index --find-links /wheels --no-cache-dir docker-vxlan-plugin

FROM ${BASE}
COPY --from=build /opt/docker-vxlan-plugin /opt/docker-vxlan-plugin
ENV PATH=/opt/docker-vxlan-plugin/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["docker-vxlan-plugin"]
