"""The masked view's plan (what is hidden, where junctions go) and its upper layout, built into
a plain directory (mounting is the integration test's job)."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import ConfigError
from oneroot.nfs import needs_view, view_spec
from oneroot.nfs.view import ViewSpec, build_upper, filesystem_of, read_mounts
from oneroot.overlay import is_opaque, is_whiteout

P = PurePosixPath
STATE, GROUPS = P("/var/state/systems"), P("/var/state/groups")


def _spec(lower: Path = Path("/"), **kw: object) -> ViewSpec:
    return view_spec("default", lower=lower, views_dir=Path("/var/lib/oneroot/views"),
                     state_dir=STATE, group_dir=GROUPS, nodes=["node01", "node02"],
                     groups=["compute"], hidden_dirs=[P("/var/lib/oneroot")],
                     **kw)  # type: ignore[arg-type]


def test_server_root_view_masks_secrets_and_state() -> None:
    spec = _spec()
    for secret in ("etc/shadow", "etc/shadow-", "etc/gshadow", "etc/gshadow-",
                   "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_rsa_key"):
        assert P(secret) in spec.whiteouts
    for emptied in ("var/state/systems", "var/state/groups", "var/lib/oneroot", "root",
                    "var/backups"):
        assert P(emptied) in spec.emptied
    assert spec.junctions == (P("var/state/groups/compute"), P("var/state/systems/node01"),
                              P("var/state/systems/node02"))
    assert spec.mountpoint == Path("/var/lib/oneroot/views/default")


def test_nested_masks_collapse() -> None:
    spec = view_spec("x", lower=Path("/"), views_dir=Path("/v"), state_dir=P("/var/state"),
                     group_dir=P("/var/state/groups"), hidden_dirs=[P("/var/state/x")])
    assert P("var/state") in spec.emptied
    assert not any(e != P("var/state") and str(e).startswith("var/state") for e in spec.emptied)


def test_image_directory_view_has_no_server_secrets(tmp_path: Path) -> None:
    spec = view_spec("img", lower=Path("/srv/img"), views_dir=Path("/v"),
                     state_dir=P("/srv/img/state"), group_dir=P("/elsewhere"), nodes=["n1"])
    assert spec.whiteouts == () and spec.emptied == (P("state"),)
    assert spec.junctions == (P("state/n1"),)


def test_needs_view() -> None:
    assert needs_view(P("/"), state_dir=STATE, group_dir=GROUPS)
    assert not needs_view(P("/srv/images/bookworm"), state_dir=STATE, group_dir=GROUPS)
    assert needs_view(P("/var"), state_dir=STATE, group_dir=GROUPS)


def test_a_junction_outside_an_emptied_dir_is_refused() -> None:
    spec = ViewSpec(name="x", lower=Path("/"), mountpoint=Path("/v/x"),
                    upper_mount=Path("/v/.x"), whiteouts=(), emptied=(),
                    junctions=(P("var/state/systems/n1"),))
    with pytest.raises(ConfigError, match="junction"):
        spec.check()


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod and trusted.* xattrs need root")
def test_build_upper_layout(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "etc" / "ssh").mkdir(parents=True)
    os.chmod(lower / "etc", 0o751)
    (lower / "etc" / "shadow").write_text("root:x")
    (lower / "root").mkdir(mode=0o700)
    (lower / "state" / "node01" / "upper").mkdir(parents=True)
    spec = view_spec("t", lower=lower, views_dir=tmp_path / "views",
                     state_dir=P(str(lower / "state")), group_dir=P("/elsewhere"),
                     nodes=["node01"], extra_masks=[P("etc/shadow"), P("etc/ssh/a_key")])
    upper = tmp_path / "upper"
    upper.mkdir()
    build_upper(spec, upper)
    assert is_whiteout(os.lstat(upper / "etc" / "shadow"))
    assert is_whiteout(os.lstat(upper / "etc" / "ssh" / "a_key"))
    assert stat.S_IMODE(os.lstat(upper / "etc").st_mode) == 0o751  # looks like the image's
    assert is_opaque(upper / "state")
    assert (upper / "state" / "node01").is_dir()
    assert list((upper / "state" / "node01").iterdir()) == []  # a mount point, nothing more


def test_mountinfo_parsing(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "30 22 0:40 / /var/lib/oneroot/views/a\\040b ro - overlay oneroot-view-a ro,xino=on\n")
    mounts = read_mounts(info)
    assert mounts[1].mount_point == Path("/var/lib/oneroot/views/a b")
    assert mounts[1].fstype == "overlay"
    assert filesystem_of(Path("/etc"), mounts) == mounts[0]
