"""The values a `root=` spec denotes, its canonical text, and a row-per-layer description."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import PurePosixPath


class Mode(enum.StrEnum):
    RO = "ro"
    RW = "rw"


TMPFS_OPTION_KEYS = ("size", "nr_inodes", "mode")
# `loop=FS` on an NFS layer: its path is a file in the export, loop-mounted as FS.
LOOP_FILESYSTEMS = ("erofs", "ext4")


@dataclass(frozen=True, slots=True, kw_only=True)
class NfsLayer:
    """`SERVER:/PATH` mounted with `mode` and extra NFS mount `options` (never `ro`/`rw`)."""

    server: str  # a host name, dotted IPv4, or IPv6 without its brackets
    path: PurePosixPath
    mode: Mode = Mode.RO
    options: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """What `mount -t nfs` takes: `[fd00::1]:/srv` for IPv6."""
        host = f"[{self.server}]" if ":" in self.server else self.server
        return f"{host}:{self.path}"

    @property
    def loop(self) -> str | None:
        """`erofs` or `ext4` when the path is an image file to loop-mount (`loop=FS`); the
        NFS mount is then of its directory."""
        for option in self.options:
            if option.startswith("loop="):
                return option[len("loop="):]
        return None

    @property
    def mount_options(self) -> tuple[str, ...]:
        """The options `mount -t nfs` gets (`loop=` is oneroot's own)."""
        return tuple(o for o in self.options if not o.startswith("loop="))


@dataclass(frozen=True, slots=True, kw_only=True)
class TmpfsLayer:
    """A tmpfs on top: always writable, its content is lost at reboot."""

    size: str | None = None
    options: tuple[str, ...] = ()  # `nr_inodes=…`, `mode=…` (the tmpfs root's file mode)

    @property
    def mode(self) -> Mode:
        return Mode.RW

    @property
    def source(self) -> str:
        return "tmpfs"

    @property
    def all_options(self) -> tuple[str, ...]:
        """Canonical order: size first, then the others as given."""
        return ((f"size={self.size}",) if self.size is not None else ()) + self.options


Layer = NfsLayer | TmpfsLayer


@dataclass(frozen=True, slots=True, kw_only=True)
class RootSpec:
    """The layers of a node's root, bottom-most first; only the top may be rw or a tmpfs."""

    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("a RootSpec needs at least one layer")
        for layer in self.layers[:-1]:
            if isinstance(layer, TmpfsLayer):
                raise ValueError("a tmpfs can only be the topmost layer")
            if layer.mode is Mode.RW:
                raise ValueError("only the topmost layer may be rw")

    @property
    def top(self) -> Layer:
        return self.layers[-1]

    @property
    def lowers(self) -> tuple[Layer, ...]:
        """Every layer below the top, bottom-most first."""
        return self.layers[:-1]

    @property
    def is_throwaway(self) -> bool:
        """True when writes land in a tmpfs and are lost at reboot."""
        return isinstance(self.top, TmpfsLayer)


def format_spec(spec: RootSpec) -> str:
    """The canonical text: the seed's own shape, so the seed's lines come back byte for byte.

    The bottom layer carries its attributes after `:`; every later NFS layer carries them as
    its own token (`;rw`, `;ro,vers=3`). NFS modes are always written, before the options.
    """
    tokens: list[str] = []
    for index, layer in enumerate(spec.layers):
        if isinstance(layer, TmpfsLayer):
            options = layer.all_options
            tokens.append("tmpfs:" + ",".join(options) if options else "tmpfs")
            continue
        attrs = ",".join((layer.mode.value, *layer.options))
        if index == 0:
            tokens.append(f"{layer.source}:{attrs}")
        else:
            tokens.extend((layer.source, attrs))
    return ";".join(tokens)


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerRow:
    """One layer as `oneroot rootspec check` shows it."""

    position: str  # "top", "2", …, "bottom"
    kind: str  # "nfs" or "tmpfs"
    text: str  # `SERVER:/PATH` or `tmpfs`
    mode: Mode
    options: tuple[str, ...]
    note: str

    def line(self) -> str:
        """The one-line form shared with the initramfs parser's `--print` (and the corpus)."""
        options = ",".join(self.options) or "-"
        return f"{self.position} {self.kind} {self.mode} {self.text} {options}"


def describe(spec: RootSpec) -> list[LayerRow]:
    """Rows top to bottom, each with what it means for the node."""
    rows: list[LayerRow] = []
    count = len(spec.layers)
    for index in range(count - 1, -1, -1):
        layer = spec.layers[index]
        if index == count - 1:
            position = "top"
        elif index == 0:
            position = "bottom"
        else:
            position = str(index + 1)
        if isinstance(layer, TmpfsLayer):
            kind, options, note = "tmpfs", layer.all_options, "changes lost at reboot"
        else:
            kind, options = "nfs", layer.options
            if index < count - 1:
                note = "read-only"
            elif layer.mode is Mode.RW:
                note = "writes go here"
            else:
                note = "read-only root: nothing can be written"
        rows.append(LayerRow(position=position, kind=kind, text=layer.source, mode=layer.mode,
                             options=options, note=note))
    return rows
