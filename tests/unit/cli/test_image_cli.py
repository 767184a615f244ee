"""`oneroot image use ROOT --expose PATH` and `oneroot image show` (what a live root's view
hides, and why), on a server tree that holds the state dir (a live root, like `/`)."""

from __future__ import annotations

import json
import shutil
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


def test_image_use_of_a_copy_of_a_live_root_warns(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A copy of a server's disk (the knfsd bench's `rootcopy`) is exported as it is: its
    shadow hashes and host keys reach every node. `image use` registers it and says so; the
    live root it was copied from, exported through its view, gets no such warning."""
    server = tmp_path / "server"
    for rel, text in (("etc/shadow", "root:$y$j9T$salt$hash:19000::::::\n"),
                      ("etc/ssh/ssh_host_ed25519_key", "private\n"), ("sbin/init", "")):
        (server / rel).parent.mkdir(parents=True, exist_ok=True)
        (server / rel).write_text(text)
    home = ["--home", str(tmp_path / "home")]
    assert run(capsys, *home, "init", "--image-root", str(server), "--state-dir",
               str(server / "var/state/systems"))[0] == 0
    code, _, err = run(capsys, *home, "image", "use", str(server))  # live: through its view
    assert code == 0 and "warning" not in err
    copy = tmp_path / "srv/images/rootcopy"
    copy.parent.mkdir(parents=True)
    shutil.copytree(server, copy, symlinks=True)
    code, out, err = run(capsys, *home, "image", "use", str(copy), "--name", "rootcopy")
    assert code == 0 and "image rootcopy:" in out
    warning, hint = err.splitlines()
    assert warning == (f"warning: image rootcopy ({copy}) holds what the masked view of a live "
                       "root hides, and nodes read it as it is: etc/shadow has password "
                       "hashes: root; SSH host private keys: etc/ssh/ssh_host_ed25519_key")
    assert hint.startswith("hint: if the image is a copy of a live system")
    assert "`oneroot image use /`" in hint and "`oneroot image exec rootcopy --" in hint
    code, _, err = run(capsys, *home, "image", "use", str(copy), "--name", "rootcopy",
                       "--init-system", "systemd")
    assert code == 0 and "warning: image rootcopy" in err
