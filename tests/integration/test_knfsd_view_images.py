"""An image export bound at its junction inside a mounted masked view (knfsd's NFSv4 root,
`ops.knfsd_layout`), with real overlayfs and bind mounts; no NFS server.

The view shows the image only through its bind; a directory that becomes masked while the
view is up is emptied through the view around the junction deep inside it (its other entries
hidden at every level on the way), and never through the junction: the bind there is the real
image, and removing through it would remove the real files. Needs root (mounts).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from oneroot.nfs import mount_view, unmount_view, update_view, view_spec
from oneroot.nfs.knfsd import JunctionBind, bind_junctions, stray_binds, unbind_junctions
from oneroot.nfs.view import ViewSpec, read_mounts

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)"),
]

IMAGE = "opt/site/images/small"  # inside a system dir: emptied as an export's junction


def _spec(lower: Path, base: Path) -> ViewSpec:
    return view_spec("default", lower=lower, views_dir=base / "views",
                     state_dir=PurePosixPath(lower / "var/state/systems"),
                     group_dir=PurePosixPath(lower / "var/state/groups"),
                     hidden_dirs=[PurePosixPath(lower / "var/lib/oneroot")],
                     exports=[PurePosixPath(lower / IMAGE),
                              PurePosixPath(lower / "srv/images/other")])


@pytest.fixture
def view() -> Iterator[tuple[ViewSpec, Path]]:
    """A view of a root that holds an image at IMAGE (with its /sbin/init), a sibling tree
    no export names, and a real image tree elsewhere, bound at IMAGE's junction."""
    base = Path("/var/tmp") / f"oneroot-knfsd-images-{os.getpid()}"
    lower = base / "root"
    for rel, text in {"etc/passwd": "public\n", f"{IMAGE}/sbin/init": "shown in place\n",
                      "opt/site/images/sibling/secret": "sibling\n",
                      "opt/site/notes": "notes\n", "srv/images/other/sbin/init": "other\n",
                      "srv/images/unexported/secret": "srv secret\n"}.items():
        (lower / rel).parent.mkdir(parents=True, exist_ok=True)
        (lower / rel).write_text(text)
    real = base / "real-image"
    (real / "sbin").mkdir(parents=True)
    (real / "sbin" / "init").write_text("the real init\n")
    spec = _spec(lower, base)
    try:
        yield spec, real
    finally:
        for m in reversed(read_mounts()):
            if m.mount_point.is_relative_to(spec.mountpoint) and m.mount_point != \
                    spec.mountpoint:
                subprocess.run(["umount", "-l", str(m.mount_point)], check=True)
        unmount_view(spec)
        shutil.rmtree(base, ignore_errors=True)


def test_an_image_shows_in_the_view_through_its_bind_only(view: tuple[ViewSpec, Path]
                                                          ) -> None:
    spec, real = view
    mount_view(spec)
    mp = spec.mountpoint
    # emptied at its junction (a directory the allowlist shows): nothing of the lower there
    assert list((mp / IMAGE).iterdir()) == []
    # /opt is a system dir: its other entries show, as before (the allowlist's business)
    assert sorted(os.listdir(mp / "opt/site/images")) == ["sibling", "small"]
    assert sorted(os.listdir(mp / "srv/images")) == ["other"]  # /srv: emptied but the way
    assert list((mp / "srv/images/other").iterdir()) == []
    bind = JunctionBind(source=real, target=mp / IMAGE)
    assert bind_junctions((bind,)) == 1
    assert (mp / IMAGE / "sbin/init").read_text() == "the real init\n"
    assert stray_binds(read_mounts(), (bind,), [mp]) == ()


def test_a_dir_masked_live_is_emptied_around_a_bound_junction(view: tuple[ViewSpec, Path]
                                                              ) -> None:
    """/opt/site becomes unreadable to others while the view is up: emptied through the view
    at the next rescan, down the way to the image's junction (the old code kept the whole
    first step, `images`, and so the sibling image), never into the junction's bind."""
    spec, real = view
    mount_view(spec)
    mp = spec.mountpoint
    bind_junctions((JunctionBind(source=real, target=mp / IMAGE),))
    # shown before the mask: what the allowlist lets through, new since the mount
    (spec.lower / "opt/site/images/late").mkdir()
    (spec.lower / "opt/site/images/late/secret").write_text("late\n")
    assert (mp / "opt/site/images/late/secret").read_text() == "late\n"
    os.chmod(spec.lower / "opt/site", 0o700)
    status = update_view(spec)
    assert PurePosixPath("opt/site") in {m.path for m in status.masks_added}
    assert sorted(os.listdir(mp / "opt/site")) == ["images"]
    assert sorted(os.listdir(mp / "opt/site/images")) == ["small"]
    assert (mp / IMAGE / "sbin/init").read_text() == "the real init\n"  # the bind, intact
    assert (real / "sbin/init").read_text() == "the real init\n"
    assert (spec.lower / "opt/site/images/late/secret").read_text() == "late\n"  # lower too
    assert os.stat(mp / "opt/site").st_mode & 0o005 == 0o005  # the way stays walkable


def test_a_bind_of_an_export_gone_since_is_undone(view: tuple[ViewSpec, Path]) -> None:
    """An export no longer in the plan (a version nobody runs): its bind is found and undone,
    the one still wanted stays."""
    spec, real = view
    mount_view(spec)
    mp = spec.mountpoint
    other = spec.lower / "srv/images/other"
    wanted = JunctionBind(source=real, target=mp / IMAGE)
    gone = JunctionBind(source=other, target=mp / "srv/images/other")
    assert bind_junctions((wanted, gone)) == 2
    stray = stray_binds(read_mounts(), (wanted,), [mp])
    assert [b.target for b in stray] == [gone.target]
    assert unbind_junctions(stray) == 1
    assert list((mp / "srv/images/other").iterdir()) == []
    assert (mp / IMAGE / "sbin/init").read_text() == "the real init\n"


def test_an_image_whose_tree_is_gone_is_left_unbound(view: tuple[ViewSpec, Path]) -> None:
    """A missing source is skipped with a warning (its export is the empty junction); the
    other binds are still made, and a bind left at that junction goes."""
    spec, real = view
    mount_view(spec)
    mp = spec.mountpoint
    assert bind_junctions((JunctionBind(source=real, target=mp / "srv/images/other"),)) == 1
    missing = JunctionBind(source=spec.lower / "srv/images/missing",
                           target=mp / "srv/images/other")
    assert bind_junctions((missing, JunctionBind(source=real, target=mp / IMAGE))) == 1
    assert list((mp / "srv/images/other").iterdir()) == []
    assert (mp / IMAGE / "sbin/init").read_text() == "the real init\n"


def test_a_stray_bind_is_never_emptied_through(view: tuple[ViewSpec, Path]) -> None:
    """/srv/images/other stops being exported (no junction in the view's spec any more) while
    its bind is still in the view (`nfs apply` undoes it only after `exportfs -ra`, and the
    rescan runs first): the now bare `srv/images` is emptied live, but never through the
    mount below it, which is the real tree (emptied through, its files would be deleted)."""
    spec, real = view
    mount_view(spec)
    mp = spec.mountpoint
    bind_junctions((JunctionBind(source=real, target=mp / "srv/images/other"),))
    base = spec.mountpoint.parent.parent
    gone = view_spec("default", lower=spec.lower, views_dir=base / "views",
                     state_dir=PurePosixPath(spec.lower / "var/state/systems"),
                     group_dir=PurePosixPath(spec.lower / "var/state/groups"),
                     hidden_dirs=[PurePosixPath(spec.lower / "var/lib/oneroot")],
                     exports=[PurePosixPath(spec.lower / IMAGE)])
    (real / "more").write_text("more\n")  # below the mount: leftovers a walk would remove
    update_view(gone)
    assert (real / "sbin/init").read_text() == "the real init\n"
    assert (real / "more").read_text() == "more\n"
    assert (mp / "srv/images/other/sbin/init").read_text() == "the real init\n"
    stray = stray_binds(read_mounts(), (), [mp])
    assert [b.target for b in stray] == [mp / "srv/images/other"]
    unbind_junctions(stray)
    update_view(gone)  # the next rescan, after the sweep: emptied now
    assert os.listdir(mp / "srv") == []
    assert (real / "sbin/init").read_text() == "the real init\n"


def test_the_way_to_a_junction_added_live_is_walkable(view: tuple[ViewSpec, Path]) -> None:
    """A junction added while the view is up, deep in an emptied dir, under a umask of 077
    (`mkdir -p` then makes its parents 0700): nodes read the view as nobody (all_squash), so
    each step on the way is made o+rx, as the mount does for the junctions it starts with."""
    spec, _ = view
    mount_view(spec)
    mp = spec.mountpoint
    (spec.lower / "srv/new/images/late").mkdir(parents=True)
    base = spec.mountpoint.parent.parent
    later = view_spec("default", lower=spec.lower, views_dir=base / "views",
                      state_dir=PurePosixPath(spec.lower / "var/state/systems"),
                      group_dir=PurePosixPath(spec.lower / "var/state/groups"),
                      hidden_dirs=[PurePosixPath(spec.lower / "var/lib/oneroot")],
                      exports=[PurePosixPath(spec.lower / IMAGE),
                               PurePosixPath(spec.lower / "srv/new/images/late")])
    old = os.umask(0o077)
    try:
        status = update_view(later)
    finally:
        os.umask(old)
    assert PurePosixPath("srv/new/images/late") in status.junctions_added
    for step in ("srv/new", "srv/new/images", "srv/new/images/late"):
        assert os.stat(mp / step).st_mode & 0o005 == 0o005, step
