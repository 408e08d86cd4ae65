from setuptools import find_packages, setup

setup(
    name="docker-vxlan-plugin",
    version="0.1.0",
    description="Docker network plugin: a VXLAN per network, a macvlan per container, no NAT",
    packages=find_packages(include=["vxlan", "vxlan.*"]),
    python_requires=">=3.9",
    install_requires=[line.strip() for line in open("requirements.txt") if line.strip()],
    entry_points={"console_scripts": ["docker-vxlan-plugin = vxlan.cli:main"]},
)
