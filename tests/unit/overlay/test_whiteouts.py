from __future__ import annotations

import os
import stat
from pathlib import Path

from oneroot.overlay.whiteouts import normalize_whiteouts


def test_fuse_whiteouts_become_devices(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "etc" / "sub").mkdir(parents=True)
    (upper / "etc" / ".wh.issue").write_bytes(b"")
    (upper / "etc" / "sub" / ".wh..wh..opq").write_bytes(b"")
    (upper / "etc" / ".wh.kept").write_bytes(b"")
    (upper / "etc" / "kept").write_text("re-created after the delete\n")
    (upper / "etc" / ".wh.notes").write_text("a real file that starts with .wh.\n")
    (tmp_path / "outside").mkdir()
    (upper / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "outside" / ".wh.x").write_bytes(b"")

    report = normalize_whiteouts(upper)

    assert report.converted == ["etc/issue"]
    st = os.lstat(upper / "etc" / "issue")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not (upper / "etc" / ".wh.issue").exists()
    assert os.getxattr(upper / "etc" / "sub", "trusted.overlay.opaque") == b"y"
    assert (upper / "etc" / "kept").read_text().startswith("re-created")
    assert (upper / "etc" / ".wh.notes").exists()
    assert (tmp_path / "outside" / ".wh.x").exists()  # never through a symlink
    assert normalize_whiteouts(upper).converted == []
