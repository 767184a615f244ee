"""`oneroot image exec|versions|diff|gc` and pins, end to end on a tmp home with a real chroot
(a static busybox in the image): versions are made, listed, compared, pinned and collected."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from oneroot.cli.main import main
from oneroot.cli.state import State
from oneroot.inventory.events import EventStore
from oneroot.model.events import BOOT_IMAGE, BootEvent
from oneroot.model.paths import Paths
from oneroot.ops.nfs_serving import nfs_plan

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and overlay need root")
BUSYBOX = Path("/bin/busybox")


def run(home: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def ok(home: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    code, out, err = run(home, *args, capsys=capsys)
    assert code == 0, err
    return out


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    h = tmp_path / "home"
    root = h / "images" / "lab"
    for d in ("bin", "etc", "proc", "sys", "dev", "usr/sbin", "var/lib/dpkg", "sbin"):
        (root / d).mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    (root / "etc/motd").write_text("v1\n")
    (root / "var/lib/dpkg/status").write_text(
        "Package: base\nStatus: install ok installed\nVersion: 1\n")
    (root / "sbin/init").symlink_to("/lib/systemd/systemd")
    default = tmp_path / "default-root"
    default.mkdir()
    for args in (
        ["init", "--image-root", str(default), "--state-dir", str(tmp_path / "systems")],
        ["image", "use", str(root), "--name", "lab"],
        ["group", "add", "compute", "--set", "image=lab"],
        ["node", "add", "node01", "--mac", "52:54:00:00:00:01", "--ip", "10.0.0.11",
         "--group", "compute"],
        ["node", "add", "node02", "--mac", "52:54:00:00:00:02", "--ip", "10.0.0.12"],
    ):
        ok(h, *args, capsys=capsys)
    return h


def _versions(home: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    doc = json.loads(ok(home, "image", "versions", "lab", "--json", capsys=capsys))
    versions = doc["versions"]
    assert isinstance(versions, list)
    return versions


INSTALL = ("printf '\\nPackage: tree\\nStatus: install ok installed\\nVersion: 2.1\\n' "
           ">> /var/lib/dpkg/status && echo v2 > /etc/motd && echo x > /etc/new")


def test_exec_makes_versions_that_are_listed_diffed_pinned_and_collected(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ok(home, "image", "exec", "lab", "--", "/bin/busybox", "sh", "-c", INSTALL,
             capsys=capsys)
    assert "new version lab@2 (from lab@1)" in out
    v1_root = home / "images/lab"
    assert (v1_root / "etc/motd").read_text() == "v1\n"  # the parent never changes
    versions = _versions(home, capsys)
    assert [(v["ref"], v["latest"], v["boots_next"]) for v in versions] == [
        ("lab@1", False, []), ("lab@2", True, ["node01"])]
    assert versions[1]["parent"] == 1 and str(versions[1]["command"]).startswith("/bin/busybox")
    assert "A /etc/new" in Path(str(versions[1]["changes"])).read_text()
    listed = {i["name"]: i for i in json.loads(ok(home, "image", "list", "--json",
                                                 capsys=capsys))}
    assert listed["lab"]["latest"] == "lab@2" and "latest" not in listed["default"]
    assert listed["lab"]["root"] == str(home / "images/lab.versions/2")
    table = ok(home, "image", "versions", "lab", capsys=capsys)
    assert "lab@2 (latest)" in table and "node01" in table

    # a failing command makes nothing, and says so on one error line with a hint
    code, _, err = run(home, "image", "exec", "lab", "--", "/bin/busybox", "sh", "-c",
                       "echo half > /etc/half; exit 4", capsys=capsys)
    assert code != 0 and "error: the command exited 4" in err
    assert "hint: " in err and "lab@2 stays the latest" in err
    assert len(_versions(home, capsys)) == 2

    diff = json.loads(ok(home, "image", "diff", "lab@1", "lab", "--json", capsys=capsys))
    assert diff["from"] == "lab@1" and diff["to"] == "lab@2"
    assert diff["packages"]["installed"] == ["tree 2.1"]
    assert "etc/new" in diff["files"]["added"] and "etc/motd" in diff["files"]["changed"]

    # pins: refused with one error and a hint, then taken
    for bad, words in (("lab@9", "has no version 9"), ("lab@0", "invalid image reference")):
        code, _, err = run(home, "group", "set", "compute", "--set", f"image={bad}",
                           capsys=capsys)
        assert code != 0 and words in err and "\nhint: " in err, err
        assert "Traceback" not in err
    ok(home, "group", "set", "compute", "--set", "image=lab@1", capsys=capsys)
    versions = _versions(home, capsys)
    assert versions[0]["pinned_by"] == ["group:compute"] and versions[0]["boots_next"] == [
        "node01"]
    status = json.loads(ok(home, "status", "--json", capsys=capsys))
    assert {n["node"]: n["next_image"] for n in status["nodes"]} == {
        "node01": "lab@1", "node02": "default"}

    # gc of one version in use: refused, saying who uses it and what to do
    code, _, err = run(home, "image", "gc", "lab@1", "--yes", capsys=capsys)
    assert code != 0 and "error: cannot remove lab@1: booted next by node01; pinned by " \
        "group:compute" in err
    assert "hint: pin group compute to another version first" in err
    code, _, err = run(home, "image", "gc", "lab@2", "--yes", capsys=capsys)
    assert code != 0 and "latest" in err and "hint:" in err
    code, _, err = run(home, "image", "gc", "lab@5", capsys=capsys)
    assert code != 0 and "has no version 5" in err
    assert (home / "images/lab").is_dir()
    # gc: a dry run by default; pinned, latest and running versions stay
    gc = json.loads(ok(home, "image", "gc", "lab", "--grace", "0", "--json", capsys=capsys))
    assert [v["action"] for v in gc["versions"]] == [
        "keep: booted next by node01; pinned by group:compute", "keep: latest"]
    ok(home, "group", "set", "compute", "--set", "image=lab", capsys=capsys)
    # node01 booted lab before it had versions: it runs lab@1 until it reboots
    _booted(home, "node01", "lab")
    plan = nfs_plan(State(paths=Paths(home=home)).cluster(), Paths(home=home))
    assert [i.name for i in plan.ctx.images] == ["default", "lab", "lab@2"]
    gc = json.loads(ok(home, "image", "gc", "lab", "--grace", "0", "--yes", "--json",
                       capsys=capsys))
    assert gc["versions"][0]["action"] == "keep: runs on node01"
    _booted(home, "node01", "lab@2")  # it rebooted
    assert [i.name for i in nfs_plan(State(paths=Paths(home=home)).cluster(), Paths(home=home))
            .ctx.images] == ["default", "lab@2"]
    dry = ok(home, "image", "gc", "lab", "--grace", "0", capsys=capsys)
    assert "would remove" in dry and "--yes" in dry and v1_root.is_dir()
    gc = json.loads(ok(home, "image", "gc", "lab", "--grace", "7d", "--yes", "--json",
                       capsys=capsys))
    assert gc["versions"][0]["action"] == "remove"  # @1 predates versions: no age
    assert not v1_root.exists()
    assert [v["ref"] for v in _versions(home, capsys)] == ["lab@2"]
    code, _, err = run(home, "image", "diff", "lab@1", "lab@2", capsys=capsys)
    assert code != 0 and "has no version 1" in err and "hint: its versions: lab@2" in err


def test_a_live_root_says_it_has_no_versions(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    h = tmp_path / "home"
    ok(h, "init", "--image-root", "/", "--state-dir", str(tmp_path / "systems"), capsys=capsys)
    out = ok(h, "image", "versions", "/", capsys=capsys)
    assert "live" in out and "no versions" in out
    assert json.loads(ok(h, "image", "versions", "default", "--json", capsys=capsys))[
        "live"] is True
    code, _, err = run(h, "image", "diff", "default@1", "default", capsys=capsys)
    assert code != 0 and "live" in err and "hint:" in err


def _booted(home: Path, node: str, ref: str) -> None:
    """What `oneroot serve` records when it hands `node` a boot file naming `ref`."""
    events = EventStore(home / "events.db")
    try:
        events.record([BootEvent(time=time.time(), kind=BOOT_IMAGE, node=node,
                                 detail={"image": ref})])
    finally:
        events.close()
