"""The example cluster every renderer test and golden file (tests/data/golden/) uses."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import PurePosixPath

from oneroot.model import InitSystem, Settings
from oneroot.net import MacAddress
from oneroot.render import (
    ClusterContext,
    ClusterNode,
    GroupLayerExport,
    ImageExport,
    NodeBootContext,
    SerialConsole,
)

# `golden(name, text)`, the conftest fixture: compare with tests/data/golden/NAME.
GoldenCheck = Callable[[str, str], None]

IP = ipaddress.IPv4Address
SETTINGS = Settings(
    gateway=IP("10.0.0.254"),
    dns=(IP("10.0.0.1"), IP("10.0.0.2")),
    domain="cluster.lan",
)
SERVER = SETTINGS.server_address
BOOT_URL = "http://10.0.0.1:8080/boot"


def mac(n: int) -> MacAddress:
    return MacAddress.parse(f"52:54:00:00:00:{n:02x}")


# The example cluster: the seed's node01, a systemd compute node with a group layer, an OpenRC
# node on its own image, an ephemeral node on an image whose init system is not recorded, and a
# server-side union node (`union=server`) that boots the merged tree the server exports to it.
EXAMPLE_NODES: dict[str, NodeBootContext] = {
    "node01": NodeBootContext(
        name="node01", macs=(mac(1),), address=IP("10.0.0.11"), server_address=SERVER,
        boot_url=BOOT_URL, kernel="vmlinuz", initramfs="initramfs.img",
        root_spec="10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw",
        init_system=InitSystem.SYSTEMD, serial=SerialConsole(),
        status_url="http://10.0.0.1:8080/api/v1/nodes/node01/status",
    ),
    "node02": NodeBootContext(
        name="node02", macs=(mac(2), MacAddress.parse("52:54:00:00:01:02")),
        address=IP("10.0.0.12"), server_address=SERVER, boot_url=BOOT_URL,
        kernel="debian/vmlinuz-6.1", initramfs="debian/initramfs-6.1.img",
        root_spec="10.0.0.1:/:ro;10.0.0.1:/var/state/groups/compute:ro;"
                  "10.0.0.1:/var/state/systems/node02;rw",
        runlevel="computenode", init_system=InitSystem.SYSTEMD,
        kernel_args=("net.ifnames=0", "quiet"),
    ),
    "node03": NodeBootContext(
        name="node03", macs=(mac(3),), address=IP("10.0.0.13"), server_address=SERVER,
        boot_url=BOOT_URL, kernel="vmlinuz", initramfs="initramfs.img",
        root_spec="10.0.0.1:/srv/oneroot/images/gentoo:ro;10.0.0.1:/var/state/groups/compute:ro;"
                  "10.0.0.1:/var/state/systems/node03;rw",
        runlevel="computenode", init_system=InitSystem.OPENRC,
    ),
    "node04": NodeBootContext(
        name="node04", macs=(mac(4),), address=IP("10.0.0.14"), server_address=SERVER,
        boot_url=BOOT_URL, kernel="vmlinuz", initramfs="initramfs.img",
        root_spec="10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node04;ro;tmpfs",
        runlevel="computenode", init_system=InitSystem.UNKNOWN,
        serial=SerialConsole(port=1, baud=9600),
    ),
    "node05": NodeBootContext(
        name="node05", macs=(mac(5),), address=IP("10.0.0.15"), server_address=SERVER,
        boot_url=BOOT_URL, kernel="vmlinuz", initramfs="initramfs.img",
        root_spec="10.0.0.1:/var/state/systems/node05/merged:rw",
        init_system=InitSystem.SYSTEMD,
    ),
}
SERVER_UNION_NODES = frozenset({"node05"})


def export_path(node: str) -> PurePosixPath:
    """What the cluster exports to `node`: its merged dir when the server unions its layers."""
    own = SETTINGS.diff_overlay_dir(node)
    return own / "merged" if node in SERVER_UNION_NODES else own


def example_cluster() -> ClusterContext:
    nodes = tuple(
        ClusterNode(
            name=node.name, macs=node.macs, address=node.address,
            export_path=export_path(node.name), export_id=100 + i,
            server_union=node.name in SERVER_UNION_NODES, read_only=node.name == "node04",
            ipxe_script_url=f"{BOOT_URL}/{node.name}.ipxe",
            bios_boot_file="pxelinux.0" if node.name == "node04" else "undionly.kpxe",
            uefi_boot_file="snponly.efi" if node.name == "node03" else "ipxe.efi",
        )
        for i, node in enumerate(EXAMPLE_NODES.values(), start=1)
    )
    return ClusterContext(
        settings=SETTINGS,
        images=(
            # the server's `/`, exported as its masked view (`nfs.view`)
            ImageExport(name="default", path=PurePosixPath("/var/lib/oneroot/views/default"),
                        export_id=1, view=True),
            ImageExport(name="gentoo", path=PurePosixPath("/srv/oneroot/images/gentoo"),
                        export_id=2),
        ),
        nodes=nodes,
        group_layers=(
            GroupLayerExport(name="compute", path=SETTINGS.group_layer_dir("compute"),
                             export_id=50, clients=(IP("10.0.0.13"), IP("10.0.0.12"))),
            GroupLayerExport(name="unused", path=SETTINGS.group_layer_dir("unused"),
                             export_id=51, clients=()),
        ),
    )
