"""The masked view's plan (an allowlist: what is hidden, why, where junctions go) and its upper
layout, built into a plain directory (mounting is the integration test's job)."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import ConfigError
from oneroot.nfs import needs_view, view_spec
from oneroot.nfs.view import ViewSpec, build_upper, filesystem_of, masks_of, read_mounts
from oneroot.nfs.viewpolicy import (
    Mask,
    MaskKind,
    ViewPolicy,
    mask_of_path,
    plan_masks,
    swap_files_under,
)
from oneroot.overlay import is_opaque, is_whiteout

P = PurePosixPath
STATE, GROUPS = P("/var/state/systems"), P("/var/state/groups")


def _tree(root: Path, files: dict[str, int]) -> None:
    for rel, mode in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text("x\n")
        os.chmod(path, mode)


def _by_path(masks: list[Mask]) -> dict[str, Mask]:
    return {str(m.path): m for m in masks}


@pytest.fixture
def server_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    _tree(root, {
        "etc/passwd": 0o644, "etc/shadow": 0o644, "etc/ssh/ssh_host_ed25519_key": 0o644,
        "etc/ssh/ssh_host_ed25519_key.pub": 0o644, "etc/ppp/chap-secrets": 0o644,
        "etc/ppp/options": 0o644, "etc/private-conf/": 0o700, "etc/private-conf/a": 0o644,
        "etc/.exports.1a2b.tmp": 0o644, "usr/bin/tool": 0o755, "usr/share/key": 0o640,
        "var/lib/dpkg/status": 0o644, "var/lib/nfs/etab": 0o644, "var/log/syslog": 0o644,
        "home/alice/notes": 0o644, "home/alice/.ssh/id_ed25519": 0o644, "srv/site.conf": 0o644,
        "swapfile": 0o644, "data/big/file": 0o644, "tmp/x": 0o644,
    })
    (root / "lib").symlink_to("usr/lib")
    (root / "var/run").symlink_to("/run")
    return root


def test_the_view_is_an_allowlist(server_root: Path) -> None:
    masks = _by_path(plan_masks(server_root, ViewPolicy(owned=((STATE.relative_to("/"),
                                                                 "oneroot state dir"),))))
    # outside the system directories: directories emptied, files hidden, links kept
    for emptied in ("home", "srv", "data", "tmp", "var/log"):
        assert masks[emptied].kind is MaskKind.EMPTIED, emptied
        assert "allowlist" in masks[emptied].reason
    assert masks["swapfile"].kind is MaskKind.HIDDEN
    assert "lib" not in masks and "var/run" not in masks and "var" not in masks
    # named secrets, whatever their mode
    for secret in ("etc/shadow", "etc/ssh/ssh_host_ed25519_key", "etc/ppp/chap-secrets",
                   "var/lib/nfs"):
        assert masks[secret].reason.startswith("secret"), secret
    # not world-readable, whoever owns it
    assert masks["usr/share/key"].reason.startswith("not world-readable (mode 0640")
    assert masks["etc/private-conf"].kind is MaskKind.EMPTIED
    assert masks["etc/.exports.1a2b.tmp"].reason == "oneroot temp file"
    # oneroot's own dir, although it does not exist yet
    assert masks["var/state/systems"].kind is MaskKind.EMPTIED
    visible = ("etc/passwd", "etc/ssh/ssh_host_ed25519_key.pub", "etc/ppp/options",
               "usr/bin/tool", "var/lib/dpkg/status", "var/lib", "etc", "usr")
    assert not set(visible) & set(masks)
    # nothing below a mask is listed again
    assert not any(Path(a).is_relative_to(b) and a != b for a in masks for b in masks)


def test_one_path_is_decided_as_the_walk_decides_it(server_root: Path) -> None:
    """The overlay tools ask path by path (`mask_of_path`): the same answer as the walk."""
    policy = ViewPolicy(owned=((P("var/state/systems"), "oneroot state dir"),),
                        expose=(P("home/alice/notes"),))
    masks = plan_masks(server_root, policy)
    for mask in masks:
        assert mask_of_path(server_root, policy, mask.path) == mask
        assert mask_of_path(server_root, policy, mask.path / "below") == mask
    for rel in ("etc/passwd", "usr/bin/tool", "lib", "var/run", "home/alice/notes"):
        assert mask_of_path(server_root, policy, P(rel)) is None, rel
    assert mask_of_path(server_root, policy, P("home/alice/.ssh/id_ed25519")) == next(
        m for m in masks if m.path == P("home/alice/.ssh"))


def test_expose_adds_a_path_but_not_the_secrets_below_it(server_root: Path) -> None:
    policy = ViewPolicy(expose=(P("home"), P("usr/share/key"), P("srv/site.conf")))
    masks = _by_path(plan_masks(server_root, policy))
    assert "home" not in masks and "home/alice/notes" not in masks
    assert masks["home/alice/.ssh"].reason.startswith("secret")
    assert "usr/share/key" not in masks  # the administrator's decision
    assert "srv" not in masks and "srv/site.conf" not in masks  # a pass-through dir
    assert "data" in masks


def test_swap_files_come_from_proc_swaps(tmp_path: Path) -> None:
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename Type Size Used Priority\n/var/lib/swap file 1024 0 -2\n"
                     "/dev/vda2 partition 1024 0 -3\n/elsewhere/swap file 1 0 -4\n")
    assert swap_files_under(Path("/"), swaps) == (P("var/lib/swap"), P("elsewhere/swap"))
    root = tmp_path / "root"
    _tree(root, {"var/lib/swap": 0o644})
    masks = _by_path(plan_masks(root, ViewPolicy(swap_files=(P("var/lib/swap"),))))
    assert masks["var/lib/swap"].reason == "swap file"


def _spec(lower: Path = Path("/"), **kw: object) -> ViewSpec:
    return view_spec("default", lower=lower, views_dir=Path("/var/lib/oneroot/views"),
                     state_dir=STATE, group_dir=GROUPS, nodes=["node01", "node02"],
                     groups=["compute"], hidden_dirs=[P("/var/lib/oneroot")],
                     **kw)  # type: ignore[arg-type]


def test_server_root_view_spec() -> None:
    spec = _spec(expose=[P("/etc/sudoers")])
    owned = dict(spec.policy.owned)
    assert owned[P("var/state/systems")] == "oneroot state dir"
    assert owned[P("var/lib/oneroot")] == "oneroot home"
    assert spec.policy.expose == (P("etc/sudoers"),)
    assert spec.junctions == (P("var/state/groups/compute"), P("var/state/systems/node01"),
                              P("var/state/systems/node02"))
    assert spec.mountpoint == Path("/var/lib/oneroot/views/default")


def test_needs_view() -> None:
    assert needs_view(P("/"), state_dir=STATE, group_dir=GROUPS)
    assert not needs_view(P("/srv/images/bookworm"), state_dir=STATE, group_dir=GROUPS)
    assert needs_view(P("/var"), state_dir=STATE, group_dir=GROUPS)


def test_a_junction_outside_an_emptied_dir_is_refused() -> None:
    spec = ViewSpec(name="x", lower=Path("/"), mountpoint=Path("/v/x"),
                    upper_mount=Path("/v/.x"), policy=ViewPolicy(),
                    junctions=(P("var/state/systems/n1"),))
    with pytest.raises(ConfigError, match="junction"):
        spec.check()


def test_exports_inside_the_view_get_a_junction() -> None:
    """ganesha looks each export's pseudo path up through the view above it: an image in
    HOME/images (or the block dir) behind the emptied home made it refuse to start. knfsd
    binds each export at its junction (the view is its NFSv4 root): an image outside HOME
    (`/srv/images/other`) had none, so a node's `server:/srv/images/other` found nothing. Such
    a junction is emptied itself (only its bind shows); one holding oneroot's trees (`/var`)
    or the lower itself is never a junction."""
    home = P("/var/lib/oneroot")
    spec = view_spec("default", lower=Path("/"), views_dir=Path("/var/lib/oneroot/views"),
                     state_dir=STATE, group_dir=GROUPS, nodes=["n1"], hidden_dirs=[home],
                     exports=[home / "images/lab", home / "images/lab.versions/2",
                              home / "blocks", P("/srv/images/other"), P("/"), P("/var"),
                              P("/opt/images/lab"), P("/opt/images/lab/nested")])
    assert spec.junctions == (P("opt/images/lab"), P("opt/images/lab/nested"),
                              P("srv/images/other"), P("var/lib/oneroot/blocks"),
                              P("var/lib/oneroot/images/lab"),
                              P("var/lib/oneroot/images/lab.versions/2"),
                              P("var/state/systems/n1"))
    owned = dict(spec.policy.owned)
    assert owned[P("srv/images/other")] == owned[P("opt/images/lab")]
    assert P("opt/images/lab/nested") not in owned and P("var") not in owned
    assert P("var/lib/oneroot/images/lab") not in owned  # inside the emptied home


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod and trusted.* xattrs need root")
def test_build_upper_layout(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "etc" / "ssh").mkdir(parents=True)
    os.chown(lower / "etc", 0, 4)
    (lower / "etc" / "shadow").write_text("root:x")
    (lower / "root").mkdir(mode=0o700)
    (lower / "state" / "node01" / "upper").mkdir(parents=True)
    spec = view_spec("t", lower=lower, views_dir=tmp_path / "views",
                     state_dir=P(str(lower / "state")), group_dir=P("/elsewhere"),
                     nodes=["node01"])
    upper = tmp_path / "upper"
    upper.mkdir()
    build_upper(spec, upper, masks_of(spec))
    assert is_whiteout(os.lstat(upper / "etc" / "shadow"))
    assert os.lstat(upper / "etc").st_gid == 4  # looks like the image's
    assert is_opaque(upper / "root")
    assert is_opaque(upper / "state")
    assert (upper / "state" / "node01").is_dir()
    assert list((upper / "state" / "node01").iterdir()) == []  # a mount point, nothing more


@pytest.mark.skipif(os.geteuid() != 0, reason="trusted.* xattrs need root")
def test_the_upper_lets_others_into_emptied_dirs_and_to_junctions(tmp_path: Path) -> None:
    """The view is exported `all_squash`: nodes read it as nobody. An emptied 0700 dir must
    list as empty, not EACCES, and 0700 dirs on the way to a junction must be walkable."""
    lower = tmp_path / "lower"
    (lower / "root").mkdir(parents=True, mode=0o700)
    (lower / "root" / "secret").write_text("x")
    (lower / "var/lib/st/systems/node01").mkdir(parents=True)
    for rel in ("var/lib/st", "var/lib/st/systems"):
        os.chmod(lower / rel, 0o700)  # the state dir's parent is masked (rule 2) itself
    spec = view_spec("t", lower=lower, views_dir=tmp_path / "views",
                     state_dir=P(str(lower / "var/lib/st/systems")), group_dir=P("/elsewhere"),
                     nodes=["node01"])
    upper = tmp_path / "upper"
    upper.mkdir()
    build_upper(spec, upper, masks_of(spec))
    modes = {rel: stat.S_IMODE(os.lstat(upper / rel).st_mode)
             for rel in ("root", "var/lib/st", "var/lib/st/systems",
                         "var/lib/st/systems/node01")}
    assert modes == {"root": 0o705, "var/lib/st": 0o705, "var/lib/st/systems": 0o705,
                     "var/lib/st/systems/node01": 0o755}
    assert stat.S_IMODE(os.lstat(lower / "root").st_mode) == 0o700  # the real one unchanged


def test_mountinfo_parsing(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "30 22 0:40 / /var/lib/oneroot/views/a\\040b ro - overlay oneroot-view-a ro,xino=on\n")
    mounts = read_mounts(info)
    assert mounts[1].mount_point == Path("/var/lib/oneroot/views/a b")
    assert mounts[1].fstype == "overlay"
    assert filesystem_of(Path("/etc"), mounts) == mounts[0]
