"""The values behind a spec: meaning, errors with carets, canonical text and description."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from oneroot.errors import RootSpecError
from oneroot.rootspec import (
    Mode,
    NfsLayer,
    RootSpec,
    TmpfsLayer,
    describe,
    format_spec,
    parse,
)

SEED_RW = "10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw"
SEED_TMPFS = "10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;ro;tmpfs"


def test_seed_rw_line_means_ro_root_under_rw_node_dir() -> None:
    spec = parse(SEED_RW)
    assert spec == RootSpec(layers=(
        NfsLayer(server="10.0.0.1", path=PurePosixPath("/"), mode=Mode.RO),
        NfsLayer(server="10.0.0.1", path=PurePosixPath("/var/state/systems/node01"),
                 mode=Mode.RW),
    ))
    assert spec.top == spec.layers[1]
    assert spec.lowers == spec.layers[:1]
    assert not spec.is_throwaway


def test_seed_tmpfs_line_is_throwaway() -> None:
    spec = parse(SEED_TMPFS)
    assert spec.top == TmpfsLayer()
    assert [layer.mode for layer in spec.layers] == [Mode.RO, Mode.RO, Mode.RW]
    assert spec.is_throwaway


def test_ipv6_server_is_stored_without_brackets() -> None:
    layer = parse("[fd00::1]:/srv").top
    assert isinstance(layer, NfsLayer)
    assert layer.server == "fd00::1"
    assert layer.source == "[fd00::1]:/srv"


def test_tmpfs_size_and_options() -> None:
    top = parse("a:/;tmpfs:mode=1777,size=1g").top
    assert top == TmpfsLayer(size="1g", options=("mode=1777",))
    assert top.all_options == ("size=1g", "mode=1777")


def test_error_carries_span_and_hint() -> None:
    with pytest.raises(RootSpecError) as info:
        parse("10.0.0.1:/:rw;tmpfs")
    error = info.value
    assert (error.start, error.end) == (11, 13)
    assert error.hint is not None
    assert str(error) == "rw below the top layer\n10.0.0.1:/:rw;tmpfs\n           ^^"


def test_syntax_errors_come_before_layer_errors() -> None:
    # the rw below the top is earlier in the text, but the bad token is a syntax error
    with pytest.raises(RootSpecError, match="unknown token"):
        parse("a:/:rw;b:/;junk")


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ((), "at least one layer"),
        ((TmpfsLayer(), NfsLayer(server="a", path=PurePosixPath("/"))), "tmpfs"),
        ((NfsLayer(server="a", path=PurePosixPath("/"), mode=Mode.RW), TmpfsLayer()), "rw"),
    ],
)
def test_rootspec_refuses_impossible_stacks(layers: tuple[NfsLayer | TmpfsLayer, ...],
                                            message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RootSpec(layers=layers)


def test_format_puts_the_bottom_attrs_inline_and_the_others_as_tokens() -> None:
    spec = RootSpec(layers=(
        NfsLayer(server="fd00::1", path=PurePosixPath("/"), options=("vers=4.2",)),
        NfsLayer(server="nfs.example", path=PurePosixPath("/g"), options=("soft",)),
        TmpfsLayer(size="512m"),
    ))
    assert format_spec(spec) == "[fd00::1]:/:ro,vers=4.2;nfs.example:/g;ro,soft;tmpfs:size=512m"


def test_describe_rows_top_to_bottom_with_notes() -> None:
    rows = describe(parse(SEED_TMPFS))
    assert [(r.position, r.kind, r.mode, r.note) for r in rows] == [
        ("top", "tmpfs", Mode.RW, "changes lost at reboot"),
        ("2", "nfs", Mode.RO, "read-only"),
        ("bottom", "nfs", Mode.RO, "read-only"),
    ]
    assert describe(parse(SEED_RW))[0].note == "writes go here"
    assert describe(parse("a:/:ro"))[0].note.startswith("read-only root")
