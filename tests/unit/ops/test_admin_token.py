"""The administrator's token: 0600, made once, refused when others may read it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oneroot.errors import ConfigError, InvalidValue
from oneroot.model.paths import Paths
from oneroot.ops.admin_token import admin_token, csrf_token, same_token, token_path
from oneroot.serve.admin import parse_listen


def test_made_once_owner_only(tmp_path: Path) -> None:
    paths = Paths(home=tmp_path)
    token = admin_token(paths)
    assert len(token) >= 32 and admin_token(paths) == token
    assert token_path(paths).stat().st_mode & 0o777 == 0o600
    assert same_token(token, token) and not same_token(token[:-1], token)
    assert not same_token(None, token) and csrf_token(token) != token


def test_a_token_others_can_read_is_refused(tmp_path: Path) -> None:
    paths = Paths(home=tmp_path)
    admin_token(paths)
    os.chmod(token_path(paths), 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        admin_token(paths)


def test_a_symlinked_token_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("x" * 40)
    token_path(Paths(home=tmp_path)).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="cannot read"):
        admin_token(Paths(home=tmp_path))


def test_admin_listen_parses() -> None:
    assert (parse_listen("8081").host, parse_listen("8081").port) == ("127.0.0.1", 8081)
    assert parse_listen("0.0.0.0:9").host == "0.0.0.0"
    with pytest.raises(InvalidValue, match="HOST:PORT"):
        parse_listen("localhost:http")
