"""A throwaway PostgreSQL 15: `initdb` and `pg_ctl` in a directory of its own, reached only by
a unix socket in that directory (no TCP listener), stopped and deleted afterwards. The tests
run one per session (`oneroot.testing.postgres`), `oneroot lab up --servers 2` one per lab
(in the lab's namespace, so that `lab down` finds it after a crash).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from oneroot.errors import LabError

POSTGRES_USER = "postgres"  # Debian's postgresql-common creates it; initdb refuses root
DATABASE = "oneroot"
VERSIONS = ("15", "16", "17")


def postgres_bin(tool: str) -> Path:
    """A PostgreSQL server tool: Debian keeps them off PATH, under /usr/lib/postgresql/N/bin."""
    for version in VERSIONS:
        candidate = Path("/usr/lib/postgresql") / version / "bin" / tool
        if candidate.exists():
            return candidate
    found = shutil.which(tool)
    if found is None:
        raise LabError(f"no PostgreSQL server here ({tool} not found)",
                       hint="install postgresql-15 (scripts/install-packages lists it)")
    return Path(found)


class PostgresServer:
    """One throwaway cluster; `url()` names its database, `new_schema_url()` an empty schema
    in it (one per test: cheaper than a database each). `root`: its directory (made, and
    removed by `stop()`; default a new temporary one); `netns`: the network namespace its
    processes run in (only a unix socket: the namespace is for cleaning up)."""

    def __init__(self, *, root: Path | None = None, netns: str | None = None) -> None:
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="oneroot-pg-"))
        else:
            root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.data = self.root / "data"
        self._schemas = itertools.count(1)
        self._as_user: list[str] = []
        self._netns = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
        if os.geteuid() == 0:
            account = pwd.getpwnam(POSTGRES_USER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", POSTGRES_USER, "--"]
        os.chmod(self.root, 0o700)

    def _run(self, *argv: str) -> None:
        # cwd: the postgres user may not enter the caller's directory (a root-owned checkout)
        done = subprocess.run([*self._netns, *self._as_user, *argv], capture_output=True,
                              timeout=120, cwd=self.root, text=True, check=False)
        if done.returncode != 0:
            raise LabError(f"{Path(argv[0]).name} {argv[-1]} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-600:]}",
                           hint=f"see {self.root / 'log'}")

    def start(self) -> None:
        self._run(str(postgres_bin("initdb")), "-D", str(self.data), "-A", "trust",
                  "-U", POSTGRES_USER, "-E", "UTF8", "--locale=C", "--no-sync")
        self.resume()
        self.sql(f"CREATE DATABASE {DATABASE}", database="postgres")

    def resume(self) -> None:
        """Start the server (again, after `pause()`: its data kept)."""
        options = (f"-c listen_addresses='' -c unix_socket_directories={self.root} "
                   "-c fsync=off -c full_page_writes=off -c max_connections=200")
        self._run(str(postgres_bin("pg_ctl")), "-D", str(self.data), "-w", "-t", "60",
                  "-l", str(self.root / "log"), "-o", options, "start")

    def pause(self) -> None:
        """Stop the server as an outage would (connections cut), keeping its data."""
        self._run(str(postgres_bin("pg_ctl")), "-D", str(self.data), "-m", "fast", "-w",
                  "stop")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(postgres_bin("pg_ctl")), "-D", str(self.data), "-m", "immediate",
                      "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, *, database: str = DATABASE, schema: str | None = None) -> str:
        url = f"postgresql://{POSTGRES_USER}@/{database}?host={quote(str(self.root), safe='')}"
        if schema is not None:
            url += "&options=" + quote(f"-csearch_path={schema}", safe="")
        return url

    def sql(self, statement: str, *, database: str = DATABASE) -> None:
        import psycopg

        with psycopg.connect(self.url(database=database), autocommit=True) as conn:
            conn.execute(statement.encode())

    def new_schema_url(self) -> str:
        schema = f"t{next(self._schemas)}"
        self.sql(f"CREATE SCHEMA {schema}")
        return self.url(schema=schema)


@contextmanager
def running_postgres(*, root: Path | None = None, netns: str | None = None
                     ) -> Iterator[PostgresServer]:
    server = PostgresServer(root=root, netns=netns)
    try:
        server.start()
        yield server
    finally:
        server.stop()
