"""Moved to `oneroot.model.paths`; this name stays until the CLI imports it from there."""

from oneroot.model.paths import DEFAULT_HOME, Paths

__all__ = ["DEFAULT_HOME", "Paths"]
