"""A full inventory for the store and YAML tests: every kind of object and value."""

from __future__ import annotations

import ipaddress
from pathlib import PurePosixPath

import pytest

from oneroot.model import DhcpMode, Group, Image, InitSystem, Node, Runlevel, Settings
from oneroot.model.imageversion import ImageVersion, VersionState
from oneroot.model.inventory import Inventory
from oneroot.testing.inventory import layer_group, make_inventory, make_node, node_mac


@pytest.fixture
def full() -> Inventory:
    settings = Settings(server_address=ipaddress.IPv4Address("10.9.0.1"),
                        subnet=ipaddress.IPv4Network("10.9.0.0/24"), interface="eth1",
                        gateway=ipaddress.IPv4Address("10.9.0.254"),
                        dns=(ipaddress.IPv4Address("10.9.0.2"),), domain="lab",
                        dhcp_mode=DhcpMode.PROXY, discovery=True,
                        pool_start=ipaddress.IPv4Address("10.9.0.200"),
                        pool_end=ipaddress.IPv4Address("10.9.0.210"))
    return make_inventory(
        nodes=[make_node(1, address="10.9.0.11", groups=("default", "compute"),
                         kernel_args=("quiet", "net.ifnames=0"), ephemeral=True),
               Node(name="node02", macs=(node_mac(2), node_mac(0x102)),
                    address=ipaddress.IPv4Address("10.9.0.12"), description="two NICs")],
        groups=[layer_group("compute", runlevel="computenode", union="server"),
                Group(name="plain", description="nothing set")],
        settings=settings, image_root="/srv/images/bookworm", init_system=InitSystem.SYSTEMD,
        images=[Image(name="gentoo", root=PurePosixPath("/srv/images/gentoo"),
                      init_system=InitSystem.OPENRC, description="OpenRC"),
                Image(name="lab", root=PurePosixPath("/srv/images/lab"), versions=(
                    ImageVersion(number=1, root=PurePosixPath("/srv/images/lab"),
                                 command="(before versions)", init_system="systemd"),
                    ImageVersion(number=2, root=PurePosixPath("/srv/lab.versions/2"), parent=1,
                                 command="apt-get install -y htop", created=1.5e9,
                                 init_system="systemd", kernel="images/lab/2/vmlinuz",
                                 size=300 << 20, added=4 << 20),
                    ImageVersion(number=3, root=PurePosixPath("/srv/lab.versions/3"), parent=2,
                                 state=VersionState.BUILDING, command="apt-get purge htop")))],
        runlevels=[Runlevel(name="computenode", services=("slurmd", "munge.service"),
                            description="compute")])
