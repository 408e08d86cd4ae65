"""docker-vxlan-plugin: a Docker network driver that gives each network a Linux
VXLAN and each container a macvlan on it, with routable addresses and no NAT."""

__version__ = "0.2.0"
