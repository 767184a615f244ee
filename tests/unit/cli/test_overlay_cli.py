"""`oneroot overlay …` end to end on a tmp home, image, group layer and node layer."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from oneroot.cli.main import main
from oneroot.ops.layerfs import is_layer_fs, layer_image, unmount_layer_fs
from oneroot.overlay.layer import is_whiteout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts and owners need root")


def run(home: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    h = tmp_path / "home"
    img = tmp_path / "image"
    (img / "etc").mkdir(parents=True)
    (img / "etc/motd").write_text("hello\n")
    (img / "etc/issue").write_text("Debian\n")
    for args in (
        ["init", "--image-root", str(img), "--state-dir", str(tmp_path / "systems")],
        ["settings", "set", f"group_dir={tmp_path / 'groups'}"],
        ["group", "add", "compute", "--set", "group_layer=true"],
        ["node", "add", "node01", "--mac", "52:54:00:00:00:01", "--ip", "10.0.0.11",
         "--group", "compute"],
    ):
        code, _, err = run(h, *args, capsys=capsys)
        assert code == 0, err
    for d in ("upper", "work"):
        (tmp_path / "systems/node01" / d).mkdir(parents=True)
    return h


def upper(home: Path) -> Path:
    return home.parent / "systems/node01/upper"


def test_cp_diff_ls_rm(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(home, "overlay", "cp", "node01", "/etc/motd", capsys=capsys)
    assert code == 0, err
    assert "copied /etc/motd from image default" in out
    (upper(home) / "etc/motd").write_text("hello\nnode\n")
    code, out, _ = run(home, "overlay", "diff", "node01", capsys=capsys)
    assert code == 0 and "+node\n" in out and "--- /etc/motd (image default)" in out
    code, out, _ = run(home, "overlay", "ls", "node01", "--json", capsys=capsys)
    [row] = json.loads(out)
    assert row["path"] == "/etc/motd" and row["change"] == "override"
    assert row["hides"]["path"] == str(home.parent / "image/etc/motd")
    code, out, _ = run(home, "overlay", "ls", "node01", capsys=capsys)
    assert "/etc/motd" in out and "override" in out
    assert run(home, "overlay", "rm", "node01", "/etc/motd", capsys=capsys)[0] == 0
    assert not (upper(home) / "etc/motd").exists()


def test_put_from_stdin_and_mask(home: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"from stdin\n")
    with src.open("rb") as f:
        monkeypatch.setattr(sys, "stdin", type("S", (), {"buffer": f, "isatty": lambda s:
                                                         False})())
        code, _, err = run(home, "overlay", "put", "node01", "/etc/new", "-", "--mode", "0600",
                           capsys=capsys)
    assert code == 0, err
    assert (upper(home) / "etc/new").read_bytes() == b"from stdin\n"
    assert stat.S_IMODE(os.lstat(upper(home) / "etc/new").st_mode) == 0o600
    assert run(home, "overlay", "mask", "node01", "/etc/issue", capsys=capsys)[0] == 0
    assert is_whiteout(os.lstat(upper(home) / "etc/issue"))
    code, _, err = run(home, "overlay", "mask", "node01", "/etc/none", capsys=capsys)
    assert code != 0 and "error: nothing below" in err and "--force" in err


def test_edit_with_editor(home: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", "sed -i s/hello/bye/")
    code, _, err = run(home, "overlay", "edit", "node01", "/etc/motd", capsys=capsys)
    assert code == 0, err
    assert (upper(home) / "etc/motd").read_text() == "bye\n"
    monkeypatch.setenv("EDITOR", "false")
    code, _, err = run(home, "overlay", "edit", "node01", "/etc/motd", capsys=capsys)
    assert code != 0 and "nothing written" in err
    assert (upper(home) / "etc/motd").read_text() == "bye\n"


def test_reset_needs_yes_and_keeps_layer_dir(home: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run(home, "overlay", "cp", "node01", "/etc/motd", capsys=capsys)
    ino = os.lstat(upper(home)).st_ino
    code, _, err = run(home, "overlay", "reset", "node01", capsys=capsys)
    assert code != 0 and "--yes" in err and (upper(home) / "etc/motd").exists()
    code, out, err = run(home, "overlay", "reset", "node01", "--yes", capsys=capsys)
    assert code == 0, err
    assert "saved in" in out
    assert list(upper(home).iterdir()) == [] and os.lstat(upper(home)).st_ino == ino


def test_promote_to_group_and_image(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (upper(home) / "etc").mkdir()
    (upper(home) / "etc/motd").write_text("for all\n")
    code, _, err = run(home, "overlay", "promote", "node01", "/etc/motd", "--to", "compute",
                         capsys=capsys)
    assert code == 0, err
    assert (home.parent / "groups/compute/etc/motd").read_text() == "for all\n"
    (upper(home) / "etc/motd").write_text("other\n")
    code, _, err = run(home, "overlay", "promote", "node01", "/etc/motd", "--to", "image",
                       capsys=capsys)
    assert code != 0 and "different /etc/motd" in err and "--overwrite" in err
    code, _, err = run(home, "overlay", "promote", "node01", "/etc/motd", "--to", "image",
                       "--overwrite", capsys=capsys)
    assert code == 0, err
    assert (home.parent / "image/etc/motd").read_text() == "other\n"


@pytest.mark.parametrize(("args", "message"), [
    (["overlay", "cp", "node01", "../../etc/shadow"], "`..` is not allowed"),
    (["overlay", "cp", "node09", "/etc/motd"], "no node named"),
    (["overlay", "cp", "node01", "/etc/none"], "no /etc/none below"),
    (["overlay", "rm", "node01", "/etc/motd"], "has no change at /etc/motd"),
    (["overlay", "put", "node01", "/x", "-", "--mode", "99"], "not an octal mode"),
    (["overlay", "promote", "node01", "/etc/motd", "--to", "image"], "has no change"),
])
def test_errors_are_one_line(home: Path, capsys: pytest.CaptureFixture[str],
                             args: list[str], message: str) -> None:
    code, _, err = run(home, *args, capsys=capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], err
    assert all(line.startswith(("error: ", "hint: ")) for line in lines), err


def test_node_rm_drops_export_then_archives_dir(home: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`node rm`: the inventory entry, then the node's export (NFS was set up), then its
    directory, archived, each step shown as it is done."""
    assert run(home, "settings", "set", "nfs_server=ganesha", capsys=capsys)[0] == 0
    layer = tmp_path / "systems/node01"
    try:
        code, _, err = run(home, "nfs", "apply", capsys=capsys)
        assert code == 0, err
        conf = home / "run/ganesha/ganesha.conf"
        assert str(layer) in conf.read_text()
        assert is_layer_fs(layer)  # the default, layer_fs=own: a filesystem of its own
        code, out, err = run(home, "node", "rm", "node01", "--yes", capsys=capsys)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[:2] == ["- node node01", "1 change(s) applied"]
        assert lines[2].startswith("archived node01's directory to ")
        assert Path(lines[2].rsplit(" ", 1)[1]).is_file()
        assert str(layer) not in conf.read_text()
        assert not layer.exists() and not layer_image(layer).exists()
    finally:
        for root in (layer, tmp_path / "groups/compute"):
            unmount_layer_fs(root)


def test_node_rm_keep_dir(home: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(home, "node", "rm", "node01", "-y", "--keep-dir", capsys=capsys)
    assert code == 0, err
    assert "archived" not in out
    assert (tmp_path / "systems/node01/upper").is_dir()
    code, out, _ = run(home, "node", "list", "--json", capsys=capsys)
    assert json.loads(out) == []


def test_drift_json_and_table(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    systems = home.parent / "systems"
    for i in (2, 3):
        code, _, err = run(home, "node", "add", f"node0{i}", "--mac", f"52:54:00:00:00:0{i}",
                           "--ip", f"10.0.0.1{i}", "--group", "compute", capsys=capsys)
        assert code == 0, err
        (systems / f"node0{i}/upper").mkdir(parents=True)
    for i in (1, 2, 3):
        (systems / f"node0{i}/upper/etc").mkdir(exist_ok=True)
        (systems / f"node0{i}/upper/etc/motd").write_text("same\n")
    (systems / "node02/upper/etc/x\x1b[31mred").write_text("")  # a node-chosen name
    code, out, err = run(home, "overlay", "drift", "compute", "--json", capsys=capsys)
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == {"group", "nodes", "promote_to", "paths", "summary"}
    assert report["nodes"] == ["node01", "node02", "node03"]
    motd = next(p for p in report["paths"] if p["path"] == "/etc/motd")
    assert (motd["overrides"], motd["contents"], motd["kinds"]) == (3, 1, ["file"])
    assert motd["promote"] == "oneroot overlay promote node01 /etc/motd --to compute"
    assert set(motd["nodes"]["node02"]) == {"kind", "digest"}
    assert [s["node"] for s in report["summary"]] == ["node01", "node02", "node03"]
    assert report["summary"][1]["files"] == 2 and report["summary"][1]["bytes"] == 5
    code, out, err = run(home, "overlay", "drift", "compute", capsys=capsys)
    assert code == 0, err
    assert "oneroot overlay promote node01 /etc/motd --to compute" in out
    assert "\x1b" not in out and "x\\x1b[31mred" in out
    assert "last change" in out and "node03" in out
    code, _, err = run(home, "overlay", "drift", "nosuch", capsys=capsys)
    assert code != 0 and "no group named 'nosuch'" in err and "hint:" in err
