"""A node's profile: the typed values groups set and nodes override, and their validation.

Groups and nodes store their values as a sparse text-keyed map (`{"union": "server"}`: the form
the database, the YAML file and `--set KEY=VALUE` share); resolution merges them into one
`Profile`, whose fields are typed (enums for the choices, tuples for lists).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from oneroot.errors import InvalidValue
from oneroot.model.checks import CHECK_KEYS, Check, check_items, declared_checks
from oneroot.model.imageversion import parse_image_ref
from oneroot.model.names import check_name


class UnionMode(enum.StrEnum):
    """Where a node's layers are unioned."""

    CLIENT = "client"  # by its initramfs (the seed's way)
    SERVER = "server"  # by the server, which exports the merged tree
    BLOCK = "block"  # by the node over local loop devices: the image's EROFS, its ext4 top


class BiosLoader(enum.StrEnum):
    IPXE = "ipxe"
    PXELINUX = "pxelinux"


class UefiLoader(enum.StrEnum):
    IPXE = "ipxe"
    SNPONLY = "snponly"


class Firmware(enum.StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


class BmcProtocol(enum.StrEnum):
    """How oneroot talks to a node's BMC."""

    IPMI = "ipmi"  # IPMI 2.0 over LAN (RMCP+), pyghmi: power, boot device, SOL console
    REDFISH = "redfish"  # DMTF Redfish over HTTPS, sushy: power and boot device


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """Every profile value of one node, merged (see `model.cluster.resolve`)."""

    image: str = field(default="default", metadata=_doc(
        "name of the image whose root is the bottom layer"))
    kernel: str = field(default="vmlinuz", metadata=_doc(
        "kernel file, relative to the boot dir"))
    initramfs: str = field(default="initramfs.img", metadata=_doc(
        "initramfs file, relative to the boot dir"))
    runlevel: str = field(default="", metadata=_doc(
        "runlevel the node boots into (empty: the image's default)"))
    kernel_args: tuple[str, ...] = field(default=(), metadata=_doc(
        "extra kernel command-line arguments"))
    extra_layers: tuple[str, ...] = field(default=(), metadata=_doc(
        "extra root= layers (spec text) between the image and group layers"))
    group_layer: bool = field(default=False, metadata=_doc(
        "the group's own directory is a read-only layer (true/false)"))
    nfs_options: str = field(default="", metadata=_doc(
        "NFS mount options for every layer, e.g. vers=4.2"))
    union: UnionMode = field(default=UnionMode.CLIENT, metadata=_doc(
        "where layers are unioned: client (node-side, the seed's way), server, or block "
        "(the node loop-mounts the image's EROFS file and its own ext4 file)"))
    block_top_size: str = field(default="2G", metadata=_doc(
        "union=block: size of the node's writable ext4 file (sparse), e.g. 4G"))
    bios_loader: BiosLoader = field(default=BiosLoader.IPXE, metadata=_doc(
        "boot loader for BIOS PXE: ipxe (undionly.kpxe) or pxelinux (pxelinux.0)"))
    uefi_loader: UefiLoader = field(default=UefiLoader.IPXE, metadata=_doc(
        "boot loader for UEFI PXE: ipxe (ipxe.efi) or snponly (snponly.efi)"))
    firmware: Firmware = field(default=Firmware.BIOS, metadata=_doc(
        "firmware of the node: bios or uefi (used by the lab)"))
    ephemeral: bool = field(default=False, metadata=_doc(
        "node's layer read-only with a tmpfs on top: changes lost at reboot"))
    server: str = field(default="", metadata=_doc(
        "ha_servers: the boot server (its name) whose service address the node mounts its "
        "root from, at its next boot (empty: the server_address)"))
    layer_quota: str = field(default="", metadata=_doc(
        "limit of the node's own writable layer, e.g. 20G (empty: none; a project quota on "
        "the state filesystem `oneroot init` made)"))

    bmc_address: str = field(default="", metadata=_doc(
        "the node's BMC: HOST or HOST:PORT on the management network (Redfish also "
        "https://HOST[:PORT] or http://HOST[:PORT])"))
    bmc_protocol: BmcProtocol = field(default=BmcProtocol.IPMI, metadata=_doc(
        "how to reach the BMC: ipmi (IPMI 2.0 LAN, port 623) or redfish (HTTPS, port 443)"))
    bmc_user: str = field(default="", metadata=_doc("user name on the node's BMC"))
    bmc_password_file: str = field(default="", metadata=_doc(
        "absolute path of a root-only file holding the BMC password (the password itself is "
        "never stored in the inventory, its YAML or the logs)"))
    bmc_ca_file: str = field(default="", metadata=_doc(
        "Redfish over HTTPS: absolute path of the CA certificate(s) (or the BMC's own "
        "certificate) its certificate is checked against (empty: the default CA bundle)"))

    check_units: tuple[str, ...] = field(default=(), metadata=_doc(
        "checks at the runlevel (`lab try`, `image rollout`): units that must be active, "
        "e.g. ssh.service"))
    check_paths: tuple[str, ...] = field(default=(), metadata=_doc(
        "checks at the runlevel: absolute paths that must exist"))
    check_commands: tuple[str, ...] = field(default=(), metadata=_doc(
        "checks at the runlevel: shell commands that must exit 0 within 60 s (--set takes "
        "one command, or a JSON list)"))

    @property
    def server_union(self) -> bool:
        """The node's layers are unioned on the server (`union=server`), not by its initramfs."""
        return self.union is UnionMode.SERVER

    @property
    def block_union(self) -> bool:
        """The node boots its image's EROFS file with its own ext4 file on top."""
        return self.union is UnionMode.BLOCK

    @property
    def block_top_bytes(self) -> int:
        return parse_size(self.block_top_size)

    @property
    def layer_quota_bytes(self) -> int | None:
        return parse_size(self.layer_quota) if self.layer_quota else None

    @property
    def checks(self) -> tuple[Check, ...]:
        """The declared checks, numbered in this order (units, paths, commands)."""
        return declared_checks(self.check_units, self.check_paths, self.check_commands)

    @property
    def nfs_option_list(self) -> tuple[str, ...]:
        return tuple(o for o in self.nfs_options.split(",") if o)

    def as_values(self) -> dict[str, ProfileValue]:
        """Key → plain value (enums as their text), in `PROFILE_KEYS` order."""
        out: dict[str, ProfileValue] = {}
        for key in PROFILE_KEYS:
            value = getattr(self, key)
            out[key] = value.value if isinstance(value, enum.Enum) else value
        return out

    @classmethod
    def from_values(cls, values: Mapping[str, ProfileValue]) -> Profile:
        """A profile from text-keyed values (missing keys take the defaults); a bad value
        raises `InvalidValue`, as `check_profile_value` does."""
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            value = check_profile_value(key, raw)
            kind = _ENUMS.get(key)
            kwargs[key] = kind(str(value)) if kind is not None else value
        return cls(**kwargs)


ProfileValue = str | bool | tuple[str, ...]

_FIELDS = dataclasses.fields(Profile)
# Profile keys a group sets and a node may override, with what each means.
PROFILE_KEYS: dict[str, str] = {f.name: f.metadata["doc"] for f in _FIELDS}
LIST_KEYS = frozenset(f.name for f in _FIELDS if f.type == "tuple[str, ...]")
BOOL_KEYS = frozenset(f.name for f in _FIELDS if f.type == "bool")
_ENUMS: dict[str, type[enum.StrEnum]] = {
    "union": UnionMode, "bios_loader": BiosLoader, "uefi_loader": UefiLoader,
    "firmware": Firmware, "bmc_protocol": BmcProtocol,
}
_CHOICES: dict[str, tuple[str, ...]] = {k: tuple(m.value for m in e) for k, e in _ENUMS.items()}
DEFAULT_PROFILE: Mapping[str, ProfileValue] = Profile().as_values()


def check_profile_value(key: str, value: Any) -> ProfileValue:
    """Validate and normalise one profile value (from the CLI, YAML or the database)."""
    if key not in PROFILE_KEYS:
        raise InvalidValue(
            f"unknown setting {key!r}", hint=f"known settings: {', '.join(sorted(PROFILE_KEYS))}"
        )
    if key in CHECK_KEYS:
        return check_items(key, value)
    if key in LIST_KEYS:
        return _check_list(key, value)
    if key in BOOL_KEYS:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise InvalidValue(f"{key} must be true or false, not {value!r}")
    if not isinstance(value, str):
        raise InvalidValue(f"{key} must be text, not {value!r}")
    text = value.strip()
    if key in _CHOICES and text not in _CHOICES[key]:
        raise InvalidValue(f"{key} must be one of {', '.join(_CHOICES[key])}, not {text!r}")
    if key in ("runlevel", "server") and text:
        check_name(key, text)
    if key == "image":
        parse_image_ref(text)
    if key in ("layer_quota", "block_top_size") and text:
        parse_size(text)
    if key == "bmc_address" and text:
        split_bmc_address(text, default_port=623)
    if key == "bmc_password_file" and text and not text.startswith("/"):
        raise InvalidValue(f"bmc_password_file {text!r} must be an absolute path",
                           hint="e.g. /etc/oneroot/bmc/rack1.pw (mode 0600)")
    if key == "bmc_ca_file" and text and not text.startswith("/"):
        raise InvalidValue(f"bmc_ca_file {text!r} must be an absolute path",
                           hint="e.g. /etc/oneroot/bmc/ca.pem")
    if key in ("kernel", "initramfs") and (not text or text.startswith("/") or ".." in
                                          PurePosixPath(text).parts):
        raise InvalidValue(f"{key} {text!r} must be a path inside the boot dir",
                           hint="give it relative to the boot dir, e.g. vmlinuz")
    if any(c.isspace() for c in text):
        raise InvalidValue(f"{key} {text!r} must not contain white space")
    return text


def _check_list(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = tuple(value.split()) if key == "kernel_args" else tuple(
            v for v in (p.strip() for p in value.split(",")) if v)
    elif isinstance(value, Sequence):
        items = tuple(str(v) for v in value)
    else:
        raise InvalidValue(f"{key} must be a list, not {value!r}")
    for item in items:
        if any(c.isspace() for c in item) or not item:
            raise InvalidValue(f"{key} item {item!r} contains white space",
                               hint="give one item per argument")
    return items


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """`20G`, `512M`, `1048576` → bytes (binary units); at least 1 MiB."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _UNITS and not t[-1:].isdigit() else ""
    number = t[: len(t) - len(unit)]
    if not number.isdigit() or int(number) * _UNITS[unit] < 1 << 20:
        raise InvalidValue(f"size {text!r} is not a size of at least 1M",
                           hint="give e.g. 20G, 512M")
    return int(number) * _UNITS[unit]


BMC_URL_SCHEMES = ("https", "http")


def split_bmc_address(text: str, *, default_port: int) -> tuple[str, str, int]:
    """`bmc01` → ("", `bmc01`, default); `https://bmc01:8443` → (`https`, `bmc01`, 8443).
    A scheme (Redfish only) takes no path: the service root is always /redfish/v1."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return ("", *split_host_port(text, default_port=default_port))
    if scheme not in BMC_URL_SCHEMES or not rest or "/" in rest.rstrip("/"):
        raise InvalidValue(f"bad BMC address {text!r}",
                           hint="write HOST, HOST:PORT or https://HOST[:PORT]")
    port = 443 if scheme == "https" else 80
    return (scheme, *split_host_port(rest.rstrip("/"), default_port=port))


def split_host_port(text: str, *, default_port: int) -> tuple[str, int]:
    """`10.1.0.11` → (`10.1.0.11`, default); `bmc01:6230` → (`bmc01`, 6230); `[fd00::11]:623`."""
    host, port = text, str(default_port)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise InvalidValue(f"bad address {text!r}", hint="write [IPV6]:PORT")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidValue(f"bad address {text!r}", hint="write HOST or HOST:PORT, e.g. 10.1.0.11")
    return host, int(port)
