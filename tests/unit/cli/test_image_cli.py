"""`oneroot image use ROOT --expose PATH` and `oneroot image show` (what a live root's view
hides, and why), on a server tree that holds the state dir (a live root, like `/`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oneroot.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_image_show_lists_masks_with_reasons(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "server"
    for rel, mode in (("etc/passwd", 0o644), ("etc/shadow", 0o640), ("usr/share/k", 0o600),
                      ("srv/site/index.html", 0o644), ("srv/other", 0o644)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x\n")
        (root / rel).chmod(mode)
    home = ["--home", str(tmp_path / "home")]
    assert run(capsys, *home, "init", "--image-root", str(root), "--state-dir",
               str(root / "var/state/systems"))[0] == 0
    code, _, err = run(capsys, *home, "image", "use", str(root), "--expose", "srv")
    assert code == 2 and "cannot expose 'srv'" in err and "hint:" in err
    assert run(capsys, *home, "image", "use", str(root), "--expose",
               str(root / "srv/site"))[0] == 0
    code, out, _ = run(capsys, *home, "image", "show", str(root), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["name"] == "default" and doc["expose"] == [str(root / "srv/site")]
    reasons = {m["path"]: m["reason"] for m in doc["masks"]}
    assert reasons["/etc/shadow"].startswith("secret")
    assert reasons["/usr/share/k"].startswith("not world-readable (mode 0600")
    assert reasons["/srv/other"] == "not a system directory (allowlist)"
    assert reasons["/var/state/systems"] == "oneroot state dir"
    assert "/srv/site" not in reasons and "/etc/passwd" not in reasons
    code, out, _ = run(capsys, *home, "image", "show")
    assert code == 0 and "hidden from nodes" in out and "/etc/shadow" in out
