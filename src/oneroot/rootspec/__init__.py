"""The `root=` grammar: parse, validate, format and describe (pure; grammar in `parser`)."""

from oneroot.rootspec.parser import parse
from oneroot.rootspec.spec import (
    Layer,
    LayerRow,
    Mode,
    NfsLayer,
    RootSpec,
    TmpfsLayer,
    describe,
    format_spec,
)

__all__ = [
    "Layer",
    "LayerRow",
    "Mode",
    "NfsLayer",
    "RootSpec",
    "TmpfsLayer",
    "describe",
    "format_spec",
    "parse",
]
