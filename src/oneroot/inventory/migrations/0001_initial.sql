-- oneroot inventory, schema 1 (SQLite and PostgreSQL alike)
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL            -- JSON
);
CREATE TABLE runlevels (
    name        TEXT PRIMARY KEY,
    services    TEXT NOT NULL,     -- JSON list
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE images (
    name        TEXT PRIMARY KEY,
    root        TEXT NOT NULL,
    init_system TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE groups (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    profile     TEXT NOT NULL      -- JSON object
);
CREATE TABLE nodes (
    name        TEXT PRIMARY KEY,
    address     TEXT NOT NULL UNIQUE,
    groups      TEXT NOT NULL,     -- JSON list, in merge order
    overrides   TEXT NOT NULL,     -- JSON object
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE node_macs (
    mac  TEXT PRIMARY KEY,
    node TEXT NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
    pos  INTEGER NOT NULL
);
CREATE INDEX node_macs_node ON node_macs(node);
