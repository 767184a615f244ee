"""Persistence: the inventory store (SQLite), its YAML form, leases and boot events."""
