"""The kernel-nfsd path: our exports file, written atomically, applied with `exportfs -ra`
only when it changed. A stand-in `exportfs` records its calls (no nfsd on this host)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from oneroot.errors import ExternalToolError
from oneroot.model.cluster import NfsServerKind
from oneroot.nfs import apply_exports, default_nfs_server, kernel_has_nfsd


def _fake_exportfs(tmp_path: Path, code: int = 0) -> tuple[Path, Path]:
    calls = tmp_path / "calls"
    script = tmp_path / "exportfs"
    script.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\necho oops >&2\nexit {code}\n")
    script.chmod(0o755)
    return script, calls


def test_written_then_applied_once(tmp_path: Path) -> None:
    exportfs, calls = _fake_exportfs(tmp_path)
    target = tmp_path / "exports.d" / "oneroot.exports"
    text = "/srv/img 10.0.0.0/24(ro,sync)\n"
    first = apply_exports(text, path=target, exportfs=str(exportfs))
    assert first.changed and first.applied
    assert target.read_text() == text
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    second = apply_exports(text, path=target, exportfs=str(exportfs))
    assert not second.changed and not second.applied
    assert calls.read_text().splitlines() == ["-ra"]
    apply_exports(text, path=target, exportfs=str(exportfs), force=True)
    assert calls.read_text().splitlines() == ["-ra", "-ra"]
    assert [p.name for p in target.parent.iterdir()] == ["oneroot.exports"]  # no temp left


def test_exportfs_failure_is_reported_with_its_stderr(tmp_path: Path) -> None:
    exportfs, _ = _fake_exportfs(tmp_path, code=1)
    with pytest.raises(ExternalToolError, match="oops"):
        apply_exports("/x *(ro)\n", path=tmp_path / "e.exports", exportfs=str(exportfs))


def test_missing_exportfs(tmp_path: Path) -> None:
    with pytest.raises(ExternalToolError, match="not found") as err:
        apply_exports("/x *(ro)\n", path=tmp_path / "e", exportfs=str(tmp_path / "nope"))
    assert err.value.hint and "nfs-kernel-server" in err.value.hint


def test_kernel_has_nfsd(tmp_path: Path) -> None:
    fs = tmp_path / "filesystems"
    fs.write_text("nodev\tsysfs\nnodev\tnfsd\n\text4\n")
    assert kernel_has_nfsd(fs)
    fs.write_text("nodev\tsysfs\n\text4\n")
    assert not kernel_has_nfsd(fs)


def test_default_nfs_server_follows_the_kernel(tmp_path: Path) -> None:
    fs = tmp_path / "filesystems"
    fs.write_text("nodev\tsysfs\nnodev\tnfsd\n")
    assert default_nfs_server(fs) is NfsServerKind.KNFSD
    fs.write_text("nodev\tsysfs\n")
    assert default_nfs_server(fs) is NfsServerKind.GANESHA
    assert default_nfs_server(tmp_path / "missing") is NfsServerKind.GANESHA


def test_junction_binds_are_made_once_and_redone_when_stale(tmp_path: Path) -> None:
    """A layer bound at its junction in the view: made once; a target that shows another tree
    (its source was replaced, as a server-side union mounted again) is bound afresh."""
    import subprocess

    from oneroot.nfs.knfsd import JunctionBind, bind_junctions

    source, other, target = tmp_path / "layer", tmp_path / "other", tmp_path / "junction"
    for d in (source, other, target):
        d.mkdir()
    (source / "mine").write_text("x")
    (other / "theirs").write_text("y")
    try:
        assert bind_junctions((JunctionBind(source=source, target=target),)) == 1
        assert (target / "mine").is_file()
        assert bind_junctions((JunctionBind(source=source, target=target),)) == 0
        assert bind_junctions((JunctionBind(source=other, target=target),)) == 1
        assert (target / "theirs").is_file() and not (target / "mine").exists()
    finally:
        while subprocess.run(["mountpoint", "-q", str(target)]).returncode == 0:
            subprocess.run(["umount", str(target)], check=True)


def test_junction_binds_are_undone_before_a_union_is_unmounted(tmp_path: Path) -> None:
    """A server-side union bound at its junction: the bind must go before the union's
    unmount (it would keep the overlayfs mount alive, and the union could not be mounted again
    on its upper dir: seen in test_knfsd's first node03 run). Only bound targets count."""
    import subprocess

    from oneroot.nfs.knfsd import JunctionBind, bind_junctions, unbind_junctions

    source, target, unbound = tmp_path / "merged", tmp_path / "junction", tmp_path / "other"
    for d in (source, target, unbound):
        d.mkdir()
    (source / "mine").write_text("x")
    binds = (JunctionBind(source=source, target=target),
             JunctionBind(source=source, target=unbound))
    try:
        assert bind_junctions(binds[:1]) == 1
        assert unbind_junctions(binds) == 1
        assert subprocess.run(["mountpoint", "-q", str(target)]).returncode != 0
        assert not (target / "mine").exists()
        assert unbind_junctions(binds) == 0
    finally:
        while subprocess.run(["mountpoint", "-q", str(target)]).returncode == 0:
            subprocess.run(["umount", "-l", str(target)], check=True)


def _client(clients: Path, cid: str, address: str) -> Path:
    """A client dir as knfsd 6.1 shows it (`info` copied from the server VM's, trimmed)."""
    d = clients / cid
    d.mkdir(parents=True)
    (d / "info").write_text(f'clientid: 0x8bdc08cb6b16923b\naddress: "{address}"\n'
                            'status: courtesy\nname: "Linux NFSv4.2 node03"\n')
    (d / "ctl").write_text("")
    return d / "ctl"


def test_a_booting_nodes_old_nfs_clients_are_expired(tmp_path: Path) -> None:
    """Only the clients at the node's address get `expire` (knfsd keeps a rebooted node's
    opens, which hold its server-side union: test_knfsd's node03 round 2); an address with a
    longer spelling, another port, IPv6 or garbage is not the node's."""
    from ipaddress import IPv4Address

    from oneroot.nfs.knfsd import expire_clients

    clients = tmp_path / "clients"
    mine = [_client(clients, "11", "10.0.0.14:853"), _client(clients, "15", "10.0.0.14:700")]
    others = [_client(clients, "9", "10.0.0.141:744"), _client(clients, "13", "10.0.0.1:14"),
              _client(clients, "16", "[fe80::14]:853"), _client(clients, "17", "nonsense")]
    (clients / "18").mkdir()  # gone between the listing and the read: no info
    assert expire_clients(IPv4Address("10.0.0.14"), clients) == 2
    assert [c.read_text() for c in mine] == ["expire\n"] * 2
    assert [c.read_text() for c in others] == [""] * 4
    assert expire_clients(IPv4Address("10.0.0.14"), tmp_path / "no-nfsd") == 0


def test_binds_of_exports_gone_since_are_found_below_the_view(tmp_path: Path) -> None:
    """A node removed (or set to union=client): its union is unmounted, and its bind at the
    junction in the NFSv4 root view must go too (it would keep the union and its upper dir
    alive); so must an image version's once no node uses it (it would keep its directory
    after `image gc`). Only below the view, and not what the plan binds (nor mounts below
    those): not the union itself, not the view, not another view's mounts."""
    from oneroot.nfs.knfsd import JunctionBind, stray_binds
    from oneroot.nfs.view import MountEntry

    view = Path("/var/lib/oneroot/views/default")
    merged = Path("/var/state/systems/node03/merged")

    def mount(at: Path, source: str = "oneroot-union-node03", fstype: str = "overlay"
              ) -> MountEntry:
        return MountEntry(mount_point=at, fstype=fstype, source=source, options="rw")

    junction = view / "var/state/systems/node03/merged"
    version = view / "var/lib/oneroot/images/lab.versions/2"
    kept = JunctionBind(source=Path("/var/state/systems/node04/merged"),
                        target=view / "var/state/systems/node04/merged")
    image = JunctionBind(source=Path("/var/lib/oneroot/images/lab"),
                         target=view / "var/lib/oneroot/images/lab")
    mounts = [mount(view, "oneroot-view-default"), mount(merged), mount(junction),
              mount(Path("/var/tmp/other/systems/node03/merged")),
              mount(kept.target, "oneroot-union-node04"), mount(kept.target / "proc", "proc"),
              mount(image.target, "/dev/loop3", "xfs"), mount(version, "/dev/loop3", "xfs"),
              mount(Path("/var/lib/oneroot/views/default2/a"))]
    assert stray_binds(mounts, (kept, image), [view]) == (
        JunctionBind(source=Path("oneroot-union-node03"), target=junction),
        JunctionBind(source=Path("/dev/loop3"), target=version))
    assert stray_binds(mounts, (kept, image), []) == ()
    assert len(stray_binds(mounts, (), [view])) == 5


