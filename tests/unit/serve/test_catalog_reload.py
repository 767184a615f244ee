"""A server whose home is on PostgreSQL reloads its inventory within a second when another
server's CLI changes it: no SIGHUP, no file to watch."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from oneroot.model.paths import Paths
from oneroot.ops import inventory as inv_ops
from oneroot.serve.holder import CatalogHolder
from oneroot.testing.postgres import PostgresServer


def test_a_postgresql_home_reloads_on_notify(tmp_path: Path,
                                             postgres_server: PostgresServer) -> None:
    url = postgres_server.new_schema_url()
    paths = Paths(home=tmp_path / "home")
    inv_ops.init_cluster(paths, {"server_address": "10.0.0.1", "image_root": str(tmp_path)},
                         db_url=url)
    holder = CatalogHolder(paths, None)
    other = inv_ops.open_store(Paths(home=tmp_path / "home"))  # another writer's connection
    try:
        assert not holder.reload()  # nothing changed
        before = other.load()
        assert not inv_ops.commit(other, before)  # an empty plan notifies nobody
        assert not holder.reload()
        changed = dataclasses.replace(before.settings, lease_time=600)
        inv_ops.commit(other, before.replace(settings=changed))
        start = time.monotonic()
        while not holder.reload():  # the other connection's commit reaches this one
            assert time.monotonic() - start < 30.0, "no reload within 30 s"
            time.sleep(0.01)
        assert holder.inventory.settings.lease_time == 600
    finally:
        other.close()
        holder.close()
