"""`oneroot overlay` on tmp dirs: an image, a group layer and a node's upper/work, through the
ops functions the CLI calls. Runs as root (whiteouts are `c 0 0` devices; owners are set)."""

from __future__ import annotations

import datetime
import io
import os
import stat
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import ConfigError, Conflict, NotFound, UsageError
from oneroot.model import Group
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.ops import overlays as ov
from oneroot.ops.nodes_fs import identity_dir
from oneroot.overlay.changes import ChangeKind
from oneroot.overlay.identity import GeneratedFile, IdentityStore
from oneroot.overlay.layer import OPAQUE_XATTR, is_whiteout, make_whiteout, set_opaque
from oneroot.overlay.stack import node_path
from oneroot.testing.inventory import layer_group, make_inventory, make_node, settings_under

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts and owners need root")

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


class Cluster:
    def __init__(self, tmp: Path, *, image_root: Path | None = None) -> None:
        self.tmp = tmp
        self.image = tmp / "image"
        self.host = tmp / "host"  # stands for the server's own files
        self.systems = tmp / "systems"
        self.groups = tmp / "groups"
        self.paths = Paths(home=tmp / "home")
        (self.image / "etc").mkdir(parents=True)
        (self.image / "etc/motd").write_text("hello\nworld\n")
        os.chown(self.image / "etc/motd", 1234, 5678)
        os.chmod(self.image / "etc/motd", 0o640)
        os.utime(self.image / "etc/motd", ns=(1_600_000_000_000_000_000,) * 2)
        (self.image / "etc/issue").write_text("Debian\n")
        (self.image / "bin").mkdir()
        (self.image / "bin/tool").write_bytes(b"\x7fELF\0\0binary")
        (self.image / "usr/lib").mkdir(parents=True)
        (self.image / "lib").symlink_to("usr/lib")
        (self.groups / "compute/etc").mkdir(parents=True)
        (self.groups / "compute/etc/slurm.conf").write_text("cluster=a\n")
        for d in (self.image / "etc", self.groups / "compute/etc"):  # a group layer's dirs
            os.chown(d, 0, 4)                                         # mirror the image's
            os.chmod(d, 0o751)
        (self.image / "usr/lib/x").write_text("x\n")
        os.chown(self.image / "usr", 0, 3)
        os.chmod(self.image / "usr", 0o705)
        self.host.mkdir()
        (self.host / "shadow").write_text("root:SECRET\n")
        for d in ("upper", "work/work"):
            (self.systems / "node01" / d).mkdir(parents=True)
        self.cluster = resolve_cluster(make_inventory(
            nodes=[make_node(1, groups=("default", "compute"))],
            groups=[layer_group("compute"), Group(name="plain")],
            settings=settings_under(tmp), image_root=image_root or self.image))

    @property
    def upper(self) -> Path:
        return self.systems / "node01/upper"


@pytest.fixture
def c(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path)


def _kinds(c: Cluster, path: str | None = None) -> dict[str, str]:
    changes = ov.list_overlay(c.cluster, c.paths, "node01", path)
    return {f"/{ch.rel}": str(ch.kind) for ch in changes}


# -- paths ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/../../x", "etc/\0x", "/", "", "."])
def test_bad_paths_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        node_path(bad)


def test_paths_are_the_nodes() -> None:
    assert node_path("/etc//motd") == node_path("etc/./motd") == PurePosixPath("etc/motd")


# -- ls / diff -----------------------------------------------------------------------------

def test_ls_shows_override_add_mask_and_what_each_hides(c: Cluster) -> None:
    (c.upper / "etc").mkdir()
    os.chown(c.upper / "etc", 0, 4)
    os.chmod(c.upper / "etc", 0o751)
    (c.upper / "etc/motd").write_text("bye\n")
    (c.upper / "etc/new.conf").write_text("x\n")
    make_whiteout(c.upper / "etc/issue")
    (c.upper / "etc/slurm.conf").write_text("cluster=b\n")
    changes = {f"/{ch.rel}": ch for ch in ov.list_overlay(c.cluster, c.paths, "node01")}
    assert {k: str(v.kind) for k, v in changes.items()} == {
        "/etc/motd": "override", "/etc/new.conf": "add", "/etc/issue": "mask",
        "/etc/slurm.conf": "override"}
    assert changes["/etc/motd"].lower is not None
    assert changes["/etc/motd"].lower.location == c.image / "etc/motd"
    slurm = changes["/etc/slurm.conf"].lower
    assert slurm is not None and slurm.layer.name == "group compute"
    assert _kinds(c, "/etc/motd") == {"/etc/motd": "override"}
    assert _kinds(c, "/var") == {}


def test_ls_reports_added_and_opaque_dirs_and_dir_attrs(c: Cluster) -> None:
    (c.upper / "etc").mkdir(mode=0o755)  # the image's /etc is 0751 root:4
    (c.upper / "bin").mkdir()
    os.chmod(c.upper / "bin", 0o755)
    set_opaque(c.upper / "bin")
    (c.upper / "opt/app").mkdir(parents=True)
    kinds = _kinds(c)
    assert kinds["/etc"] == "override"
    assert kinds["/bin"] == "opaque"
    assert kinds["/opt"] == kinds["/opt/app"] == "add"


def test_ls_marks_generated_files(c: Cluster) -> None:
    (c.upper / "etc").mkdir()
    (c.upper / "etc/hostname").write_text("node01\n")
    IdentityStore(identity_dir(c.paths, "node01")).write_manifest(
        {PurePosixPath("etc/hostname"): GeneratedFile(data=b"node01\n")})
    [change] = [ch for ch in ov.list_overlay(c.cluster, c.paths, "node01") if ch.rel.name ==
                "hostname"]
    assert change.generated and change.kind is ChangeKind.ADD


def test_diff_text_binary_masked_added(c: Cluster) -> None:
    (c.upper / "etc").mkdir()
    (c.upper / "etc/motd").write_text("hello\nthere\n")
    os.chown(c.upper / "etc/motd", 1234, 5678)
    os.chmod(c.upper / "etc/motd", 0o640)
    make_whiteout(c.upper / "etc/issue")
    (c.upper / "etc/added").write_text("x")
    (c.upper / "bin").mkdir()
    (c.upper / "bin/tool").write_bytes(b"\x7fELF\0\0other!")
    text = "".join(t for _, t in ov.diff_overlay(c.cluster, c.paths, "node01"))
    assert "--- /etc/motd (image default)\n+++ /etc/motd (node node01)\n" in text
    assert "-world\n+there\n" in text
    assert "masked: /etc/issue (hides image default file)" in text
    assert "added: /etc/added (file)" in text
    assert "/bin/tool: binary: image default 12 bytes, sha256 " in text
    assert "mode/owner" not in text.split("/bin/tool")[0]


# -- cp / put / edit -----------------------------------------------------------------------

def test_cp_copies_content_owner_mode_mtime_and_parent_attrs(c: Cluster) -> None:
    result = ov.copy_from_lower(c.cluster, c.paths, "node01", "/etc/motd")
    assert result.changed
    st = os.lstat(c.upper / "etc/motd")
    assert (c.upper / "etc/motd").read_text() == "hello\nworld\n"
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o640)
    assert st.st_mtime_ns == 1_600_000_000_000_000_000
    dst = os.lstat(c.upper / "etc")
    assert (dst.st_uid, dst.st_gid, stat.S_IMODE(dst.st_mode)) == (0, 4, 0o751)
    ov.copy_from_lower(c.cluster, c.paths, "node01", "/usr/lib/x")
    dst = os.lstat(c.upper / "usr")
    assert (dst.st_uid, dst.st_gid, stat.S_IMODE(dst.st_mode)) == (0, 3, 0o705)
    assert _kinds(c) == {"/etc/motd": "override", "/usr/lib/x": "override"}
    assert [p.name for p in (c.upper / "etc").iterdir()] == ["motd"]  # no temp left
    with pytest.raises(Conflict, match="already has its own"):
        ov.copy_from_lower(c.cluster, c.paths, "node01", "/etc/motd")
    ov.copy_from_lower(c.cluster, c.paths, "node01", "/etc/motd", force=True)


def test_cp_from_a_group_layer_and_refusals(c: Cluster) -> None:
    ov.copy_from_lower(c.cluster, c.paths, "node01", "/etc/slurm.conf")
    assert (c.upper / "etc/slurm.conf").read_text() == "cluster=a\n"
    with pytest.raises(NotFound):
        ov.copy_from_lower(c.cluster, c.paths, "node01", "/etc/nothing")
    with pytest.raises(UsageError, match="directory"):
        ov.copy_from_lower(c.cluster, c.paths, "node01", "/etc")
    with pytest.raises(UsageError, match="/lib is a symbolic link in image"):
        ov.copy_from_lower(c.cluster, c.paths, "node01", "/lib/x")


def test_put_keeps_image_owner_and_mode_and_mode_option(c: Cluster) -> None:
    ov.put_file(c.cluster, c.paths, "node01", "/etc/motd", io.BytesIO(b"new\n"))
    st = os.lstat(c.upper / "etc/motd")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (1234, 0o640)
    ov.put_file(c.cluster, c.paths, "node01", "/srv/data/x", io.BytesIO(b"1"), mode=0o600)
    assert stat.S_IMODE(os.lstat(c.upper / "srv/data/x").st_mode) == 0o600
    assert (c.upper / "srv/data/x").read_bytes() == b"1"


def test_edit_starts_from_image_writes_back_and_skips_unchanged(c: Cluster) -> None:
    def append(p: Path) -> None:
        p.write_text(p.read_text() + "edited\n")

    result = ov.edit_file(c.cluster, c.paths, "node01", "/etc/motd", append, tmp_dir=c.tmp)
    assert result.changed and "started from the image default file" in result.message
    assert (c.upper / "etc/motd").read_text() == "hello\nworld\nedited\n"
    assert stat.S_IMODE(os.lstat(c.upper / "etc/motd").st_mode) == 0o640
    result = ov.edit_file(c.cluster, c.paths, "node01", "/etc/motd", lambda p: None,
                          tmp_dir=c.tmp)
    assert not result.changed
    result = ov.edit_file(c.cluster, c.paths, "node01", "/etc/issue", lambda p: None,
                          tmp_dir=c.tmp)
    assert not result.changed and not (c.upper / "etc/issue").exists()
    assert not [p for p in c.tmp.iterdir() if p.name.startswith("oneroot-edit-")]


def test_edit_conflict_keeps_the_edited_copy(c: Cluster) -> None:
    def node_writes_meanwhile(p: Path) -> None:
        p.write_text("mine\n")
        (c.upper / "etc").mkdir(exist_ok=True)
        (c.upper / "etc/motd").write_text("the node's\n")

    with pytest.raises(Conflict) as err:
        ov.edit_file(c.cluster, c.paths, "node01", "/etc/motd", node_writes_meanwhile,
                     tmp_dir=c.tmp)
    assert (c.upper / "etc/motd").read_text() == "the node's\n"
    kept = Path(str(err.value.hint).split("kept in ")[1].split(";")[0])
    assert kept.read_text() == "mine\n"


# -- rm / mask -----------------------------------------------------------------------------

def test_rm_shows_the_image_file_again(c: Cluster) -> None:
    ov.copy_from_lower(c.cluster, c.paths, "node01", "/etc/motd")
    result = ov.remove_change(c.cluster, c.paths, "node01", "/etc/motd")
    assert "image default file shows again" in result.message
    assert not (c.upper / "etc/motd").exists()
    with pytest.raises(NotFound):
        ov.remove_change(c.cluster, c.paths, "node01", "/etc/motd")
    (c.upper / "opt/a").mkdir(parents=True)
    (c.upper / "opt/a/f").write_text("")
    with pytest.raises(UsageError, match="with files in it") as err:
        ov.remove_change(c.cluster, c.paths, "node01", "/opt")
    assert "--recursive" in str(err.value.hint)
    ov.remove_change(c.cluster, c.paths, "node01", "/opt", recursive=True)
    assert not (c.upper / "opt").exists()


def test_mask_writes_a_whiteout_and_refuses_nothing_below(c: Cluster) -> None:
    result = ov.mask_path(c.cluster, c.paths, "node01", "/etc/issue")
    assert result.changed
    assert is_whiteout(os.lstat(c.upper / "etc/issue"))
    assert not ov.mask_path(c.cluster, c.paths, "node01", "/etc/issue").changed
    with pytest.raises(NotFound, match="nothing below"):
        ov.mask_path(c.cluster, c.paths, "node01", "/etc/nothing")
    ov.mask_path(c.cluster, c.paths, "node01", "/etc/nothing", force=True)
    ov.copy_from_lower(c.cluster, c.paths, "node01", "/etc/motd")
    with pytest.raises(Conflict, match="has its own"):
        ov.mask_path(c.cluster, c.paths, "node01", "/etc/motd")
    ov.remove_change(c.cluster, c.paths, "node01", "/etc/issue")
    assert not (c.upper / "etc/issue").exists()


def test_writes_under_a_masked_directory_are_refused(c: Cluster) -> None:
    make_whiteout(c.upper / "etc")
    with pytest.raises(ConfigError, match="/etc is not a directory"):
        ov.put_file(c.cluster, c.paths, "node01", "/etc/motd", io.BytesIO(b"x"))


# -- symlinks the node planted -------------------------------------------------------------

def test_a_symlinked_dir_in_upper_is_never_followed(c: Cluster) -> None:
    (c.upper / "etc").symlink_to(c.host)
    for call in (
        lambda: ov.copy_from_lower(c.cluster, c.paths, "node01", "/etc/motd"),
        lambda: ov.put_file(c.cluster, c.paths, "node01", "/etc/shadow", io.BytesIO(b"pwned")),
        lambda: ov.edit_file(c.cluster, c.paths, "node01", "/etc/shadow", lambda p: None),
        lambda: ov.mask_path(c.cluster, c.paths, "node01", "/etc/motd"),
        lambda: ov.remove_change(c.cluster, c.paths, "node01", "/etc/shadow"),
        lambda: ov.promote_change(c.cluster, c.paths, "node01", "/etc/shadow", to="compute"),
    ):
        with pytest.raises(ConfigError, match="symbolic link"):
            call()
    assert sorted(p.name for p in c.host.iterdir()) == ["shadow"]
    assert (c.host / "shadow").read_text() == "root:SECRET\n"
    # ls shows the link itself (the node replaced /etc), not the host's files.
    assert _kinds(c) == {"/etc": "override"}
    # rm drops the link, not what it points to.
    ov.remove_change(c.cluster, c.paths, "node01", "/etc")
    assert (c.host / "shadow").read_text() == "root:SECRET\n"


def test_a_symlinked_file_in_upper_is_not_read_or_written_through(c: Cluster) -> None:
    (c.upper / "etc").mkdir()
    (c.upper / "etc/motd").symlink_to(c.host / "shadow")
    text = "".join(t for _, t in ov.diff_overlay(c.cluster, c.paths, "node01"))
    assert "SECRET" not in text and f"type: file -> symlink {c.host / 'shadow'}" in text
    with pytest.raises(UsageError, match="symlink"):
        ov.edit_file(c.cluster, c.paths, "node01", "/etc/motd", lambda p: None)
    with pytest.raises(UsageError, match="symlink"):
        ov.put_file(c.cluster, c.paths, "node01", "/etc/motd", io.BytesIO(b"pwned"))
    ov.copy_from_lower(c.cluster, c.paths, "node01", "/etc/motd", force=True)
    assert (c.host / "shadow").read_text() == "root:SECRET\n"
    assert not (c.upper / "etc/motd").is_symlink()


def test_upper_itself_replaced_by_a_symlink(c: Cluster) -> None:
    os.rmdir(c.upper)
    c.upper.symlink_to(c.host)
    with pytest.raises(ConfigError):
        ov.put_file(c.cluster, c.paths, "node01", "/shadow", io.BytesIO(b"pwned"))
    with pytest.raises(ConfigError):
        ov.list_overlay(c.cluster, c.paths, "node01")
    with pytest.raises(ConfigError):
        ov.reset_layer(c.cluster, c.paths, "node01", archive=False)
    assert (c.host / "shadow").read_text() == "root:SECRET\n"


def test_live_root_image_is_seen_through_its_export_masks(tmp_path: Path) -> None:
    c = Cluster(tmp_path, image_root=Path("/"))
    with pytest.raises(NotFound):
        ov.copy_from_lower(c.cluster, c.paths, "node01", "/etc/shadow")
    assert not (c.upper / "etc/shadow").exists()
    with pytest.raises(ConfigError, match="live"):
        (c.upper / "etc").mkdir()
        (c.upper / "etc/x").write_text("x")
        ov.promote_change(c.cluster, c.paths, "node01", "/etc/x", to="image")


# -- reset ---------------------------------------------------------------------------------

def test_reset_empties_in_place_and_keeps_identity(c: Cluster) -> None:
    store = IdentityStore(identity_dir(c.paths, "node01"))
    store.write_manifest({PurePosixPath("etc/hostname"): GeneratedFile(data=b"node01\n"),
                          PurePosixPath("etc/machine-id"): GeneratedFile(data=b"x\n")})
    (c.upper / "etc").mkdir()
    set_opaque(c.upper / "etc")
    (c.upper / "etc/hostname").write_text("node01\n")
    (c.upper / "etc/machine-id").symlink_to(c.host / "shadow")  # not a kept file: dropped
    (c.upper / "etc/motd").write_text("changed\n")
    make_whiteout(c.upper / "etc/issue")
    (c.upper / "home/u").mkdir(parents=True)
    (c.upper / "home/u/link").symlink_to(c.host)
    (c.systems / "node01/work/work/#1").write_text("scratch")
    (c.systems / "node01/work/stray").write_text("")
    ino = (os.lstat(c.upper).st_ino, os.lstat(c.systems / "node01/work").st_ino)

    result = ov.reset_layer(c.cluster, c.paths, "node01", now=NOW)
    assert result.kept == (PurePosixPath("etc/hostname"),)
    assert sorted(str(p.relative_to(c.upper)) for p in c.upper.rglob("*")) == [
        "etc", "etc/hostname"]
    with pytest.raises(OSError):
        os.getxattr(c.upper / "etc", OPAQUE_XATTR)
    assert (os.lstat(c.upper).st_ino, os.lstat(c.systems / "node01/work").st_ino) == ino
    assert sorted(p.name for p in (c.systems / "node01/work").iterdir()) == ["work"]
    assert list((c.systems / "node01/work/work").iterdir()) == []
    assert (c.host / "shadow").read_text() == "root:SECRET\n"
    assert result.archive == c.paths.home / "archive/node01-reset-20240501T120000Z.tar.gz"
    with tarfile.open(result.archive) as tar:
        names = {m.name: m for m in tar.getmembers()}
    assert names["node01/upper/etc/motd"].isfile()
    assert names["node01/upper/etc/issue"].ischr()
    assert names["node01/upper/home/u/link"].issym()
    assert names["node01/upper/etc"].pax_headers[f"SCHILY.xattr.{OPAQUE_XATTR}"] == "y"


# -- promote -------------------------------------------------------------------------------

def test_promote_to_group_moves_the_file(c: Cluster) -> None:
    ov.put_file(c.cluster, c.paths, "node01", "/etc/motd", io.BytesIO(b"for all\n"))
    result = ov.promote_change(c.cluster, c.paths, "node01", "/etc/motd", to="compute", now=NOW)
    assert "moved /etc/motd to group compute" in result.message and result.archive is None
    assert (c.groups / "compute/etc/motd").read_bytes() == b"for all\n"
    st = os.lstat(c.groups / "compute/etc/motd")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (1234, 0o640)
    assert not (c.upper / "etc/motd").exists()
    assert _kinds(c) == {}


def test_promote_a_mask_to_a_group_and_to_the_image(c: Cluster) -> None:
    ov.mask_path(c.cluster, c.paths, "node01", "/etc/issue")
    ov.promote_change(c.cluster, c.paths, "node01", "/etc/issue", to="compute")
    assert is_whiteout(os.lstat(c.groups / "compute/etc/issue"))
    assert (c.image / "etc/issue").exists() and not (c.upper / "etc/issue").exists()
    ov.mask_path(c.cluster, c.paths, "node01", "/bin/tool")
    result = ov.promote_change(c.cluster, c.paths, "node01", "/bin/tool", to="image",
                               overwrite=True, now=NOW)
    assert not (c.image / "bin/tool").exists() and result.archive is not None
    with tarfile.open(result.archive) as tar:
        member = tar.extractfile("image-default/bin/tool")
        assert member is not None and member.read() == b"\x7fELF\0\0binary"


def test_promote_refuses_a_different_file_unless_overwrite(c: Cluster) -> None:
    ov.put_file(c.cluster, c.paths, "node01", "/etc/motd", io.BytesIO(b"mine\n"))
    with pytest.raises(Conflict, match="already has a different /etc/motd"):
        ov.promote_change(c.cluster, c.paths, "node01", "/etc/motd", to="image")
    assert (c.upper / "etc/motd").exists()
    result = ov.promote_change(c.cluster, c.paths, "node01", "/etc/motd", to="image",
                               overwrite=True, now=NOW)
    assert (c.image / "etc/motd").read_text() == "mine\n"
    assert result.archive is not None and result.archive.name.startswith("promote-node01-")


def test_promote_refusals(c: Cluster) -> None:
    ov.put_file(c.cluster, c.paths, "node01", "/etc/x", io.BytesIO(b"x"))
    with pytest.raises(UsageError, match="not in group plain"):
        ov.promote_change(c.cluster, c.paths, "node01", "/etc/x", to="plain")
    with pytest.raises(NotFound):
        ov.promote_change(c.cluster, c.paths, "node01", "/etc/x", to="nogroup")
    with pytest.raises(NotFound):
        ov.promote_change(c.cluster, c.paths, "node01", "/etc/none", to="compute")


def test_promote_to_image_warns_when_a_group_layer_hides_it(c: Cluster) -> None:
    ov.put_file(c.cluster, c.paths, "node01", "/etc/slurm.conf", io.BytesIO(b"cluster=z\n"))
    result = ov.promote_change(c.cluster, c.paths, "node01", "/etc/slurm.conf", to="image")
    assert "sees group compute" in result.message
    assert (c.image / "etc/slurm.conf").read_text() == "cluster=z\n"


# -- node removal --------------------------------------------------------------------------

def test_archive_node_dir(c: Cluster) -> None:
    (c.upper / "etc").mkdir()
    (c.upper / "etc/motd").write_text("mine\n")
    os.link(c.upper / "etc/motd", c.upper / "etc/motd.hard")
    make_whiteout(c.upper / "etc/issue")
    (c.upper / "etc/evil").symlink_to(c.host / "shadow")
    IdentityStore(identity_dir(c.paths, "node01")).write_manifest({})
    dest = ov.archive_node_dir(c.cluster, c.paths, "node01", now=NOW)
    assert dest == c.paths.home / "archive/node01-20240501T120000Z.tar.gz"
    assert not (c.systems / "node01").exists() and c.systems.is_dir()
    assert not identity_dir(c.paths, "node01").exists()
    assert (c.host / "shadow").read_text() == "root:SECRET\n"
    with tarfile.open(dest) as tar:
        m = {x.name: x for x in tar.getmembers()}
    assert m["node01/layer/upper/etc/issue"].ischr()
    assert (m["node01/layer/upper/etc/issue"].devmajor,
            m["node01/layer/upper/etc/issue"].devminor) == (0, 0)
    assert m["node01/layer/upper/etc/evil"].linkname == str(c.host / "shadow")
    assert m["node01/layer/upper/etc/motd.hard"].islnk()
    assert m["node01/layer/work/work"].isdir()
    assert "node01/identity/manifest.json" in m
    assert ov.archive_node_dir(c.cluster, c.paths, "node01") is None
