"""The web administrator's token: random, in oneroot's home, readable by its owner only."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from oneroot.errors import ConfigError
from oneroot.model.paths import Paths

TOKEN_FILE = "admin-token"
MAX_TOKEN = 256


def token_path(paths: Paths) -> Path:
    return paths.home / TOKEN_FILE


def admin_token(paths: Paths) -> str:
    """The token, made on first use (0600: written, fsynced, renamed into place)."""
    path = token_path(paths)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _create(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}",
                          hint="remove it; `oneroot admin token` makes a new one") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077 or st.st_uid != os.getuid():
            raise ConfigError(f"{path} is readable by others or not a file of ours",
                              hint="remove it; `oneroot admin token` makes a new one")
        token = f.read(MAX_TOKEN).decode("ascii", "replace").strip()
    if len(token) < 32:
        raise ConfigError(f"{path} holds no token", hint="remove it and run `oneroot admin token`")
    return token


def _create(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # never replaces a token another process made meanwhile
    except FileExistsError:
        return admin_token_at(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return token


def admin_token_at(path: Path) -> str:
    return admin_token(Paths(home=path.parent))


def csrf_token(token: str) -> str:
    """What the page sends in `X-Oneroot-CSRF` with every POST: derived from the token, so a
    page that cannot read the admin listener's answers cannot know it."""
    return hmac.new(token.encode(), b"oneroot-csrf", hashlib.sha256).hexdigest()


def same_token(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
