"""Image versions: an image is a sequence of immutable versions (`lab@1`, `lab@2`, …), and
groups and nodes name it by `image=lab` (the latest complete version: a channel) or
`image=lab@3` (that version, fixed).

An image recorded before versions existed has none stored: it is its own version 1, rooted at
the image's root (`Image.all_versions()`), so nothing on disk moves and its export keeps its id.
A version is `building` while `oneroot image exec` makes it and `complete` once its tree is
whole and synced; only complete versions are resolved, pinned or exported.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from oneroot.errors import InvalidValue
from oneroot.model.names import check_name

_REF = re.compile(r"^(?P<name>[^@]*)(@(?P<version>[0-9]{1,9}))?$")


class VersionState(enum.StrEnum):
    BUILDING = "building"
    COMPLETE = "complete"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageVersion:
    """One immutable root of an image, and how it was made."""

    number: int
    root: PurePosixPath
    state: VersionState = VersionState.COMPLETE
    parent: int | None = None
    command: str = ""  # what made it (the exec's command line, an import, "before versions")
    changes: str = ""  # the change list it was recorded with (HOME/images/NAME.changes/…)
    created: float = 0.0  # epoch seconds (0: unknown, a version that predates versions)
    init_system: str = "unknown"
    # Boot files the version provides, relative to the boot dir ("": the profile's own).
    kernel: str = ""
    initramfs: str = ""
    size: int = 0  # bytes the tree holds (apparent sizes)
    added: int = 0  # bytes of files new or changed against the parent (what it costs on disk)

    @property
    def complete(self) -> bool:
        return self.state is VersionState.COMPLETE


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRef:
    """`lab` (the channel: latest complete version) or `lab@3` (version 3)."""

    name: str
    version: int | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"


def parse_image_ref(text: str) -> ImageRef:
    """`lab` → ImageRef("lab"); `lab@3` → ImageRef("lab", 3). A bad name or version raises
    `InvalidValue` (with a hint)."""
    m = _REF.match(text.strip())
    if m is None or (m.group(2) is not None and int(m.group("version")) < 1):
        raise InvalidValue(f"invalid image reference {text!r}",
                           hint="write NAME (the latest version) or NAME@N, e.g. lab@3")
    name = check_name("image", m.group("name"))
    version = m.group("version")
    return ImageRef(name=name, version=int(version) if version is not None else None)


def version_json(v: ImageVersion) -> dict[str, object]:
    """The stored form (the database's `versions` column, the YAML file, `--json`)."""
    return {"number": v.number, "root": str(v.root), "state": v.state.value,
            "parent": v.parent, "command": v.command, "changes": v.changes,
            "created": v.created,
            "init_system": v.init_system, "kernel": v.kernel, "initramfs": v.initramfs,
            "size": v.size, "added": v.added}


def version_from_json(data: object) -> ImageVersion:
    if not isinstance(data, dict):
        raise InvalidValue(f"an image version must be a mapping, not {data!r}")
    try:
        parent = data.get("parent")
        return ImageVersion(
            number=int(data["number"]), root=PurePosixPath(str(data["root"])),
            state=VersionState(str(data.get("state", "complete"))),
            parent=int(parent) if parent is not None else None,
            command=str(data.get("command", "")), changes=str(data.get("changes", "")),
            created=float(data.get("created", 0.0)),
            init_system=str(data.get("init_system", "unknown")),
            kernel=str(data.get("kernel", "")), initramfs=str(data.get("initramfs", "")),
            size=int(data.get("size", 0)), added=int(data.get("added", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidValue(f"bad image version {data!r}: {exc}",
                           hint="each version needs a number and a root") from None
