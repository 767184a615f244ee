"""A throwaway PostgreSQL 15: `initdb` and `pg_ctl` in a directory of its own, reached only by
a unix socket in that directory (no TCP listener), stopped and deleted afterwards. The tests
run one per session (`oneroot.testing.postgres`), `oneroot lab up --servers 2` one per lab
(in the lab's namespace, so that `lab down` finds it after a crash).

The tests' server lives no longer than the process that started it (`stop_with_owner`): the
postmaster runs in a session of its own (pg_ctl's double fork), which neither a Ctrl-C nor the
owner's death reaches, so a watchdog in a session of its own too holds one end of a pipe the
owner holds the other; when the owner is gone (killed, or its run interrupted before its
cleanup), the pipe says so and the watchdog stops the postmaster and removes the directory.
One whose watchdog was killed as well is stopped by the next such start (`reap_stale`), from
the owner's PID and start time the directory records.
"""

from __future__ import annotations

import contextlib
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
PREFIX = "oneroot-pg-"  # a temporary server's directory, in the temporary directory
OWNER_FILE = "owner"  # its owner's PID and start time (/proc/PID/stat's 22nd field)
# The watchdog: waits for the owner's end of the pipe on its stdin to close, then stops the
# postmaster (the command after the directory) and removes the directory.
_WATCHDOG = ('root=$1; shift; cat >/dev/null; '
             'if [ -e "$root/data/postmaster.pid" ]; then "$@"; fi; rm -rf -- "$root"')


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
    processes run in (only a unix socket: the namespace is for cleaning up); `stop_with_owner`:
    stopped and removed when this process ends, however it ends (a watchdog, see above)."""

    def __init__(self, *, root: Path | None = None, netns: str | None = None,
                 stop_with_owner: bool = False) -> None:
        if root is None:
            root = Path(tempfile.mkdtemp(prefix=PREFIX))
        else:
            root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.data = self.root / "data"
        self._schemas = itertools.count(1)
        self._as_user: list[str] = []
        self._netns = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
        self._stop_with_owner = stop_with_owner
        self._owner_end: int | None = None  # our end of the watchdog's pipe
        self.watchdog: subprocess.Popen[bytes] | None = None
        if stop_with_owner:
            (root / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        if os.geteuid() == 0:
            account = pwd.getpwnam(POSTGRES_USER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", POSTGRES_USER, "--"]
        os.chmod(self.root, 0o700)

    def _command(self, *argv: str) -> list[str]:
        return [*self._netns, *self._as_user, *argv]

    def _run(self, *argv: str) -> None:
        # cwd: the postgres user may not enter the caller's directory (a root-owned checkout)
        done = subprocess.run(self._command(*argv), capture_output=True,
                              timeout=120, cwd=self.root, text=True, check=False)
        if done.returncode != 0:
            raise LabError(f"{Path(argv[0]).name} {argv[-1]} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-600:]}",
                           hint=f"see {self.root / 'log'}")

    def start(self) -> None:
        if self._stop_with_owner:
            self._start_watchdog()
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
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(*self._stop_argv())
            shutil.rmtree(self.root, ignore_errors=True)
        finally:
            self._end_watchdog()

    def _stop_argv(self) -> list[str]:
        return [str(postgres_bin("pg_ctl")), "-D", str(self.data), "-m", "immediate", "-w",
                "stop"]

    def _start_watchdog(self) -> None:
        """The watchdog, before the postmaster exists (so there is none without one)."""
        watched, self._owner_end = os.pipe()  # neither inherited by our other children
        try:
            self.watchdog = subprocess.Popen(
                ["sh", "-c", _WATCHDOG, "oneroot-pg-watchdog", str(self.root),
                 *self._command(*self._stop_argv())],
                stdin=watched, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                cwd="/", start_new_session=True)
        finally:
            os.close(watched)

    def _end_watchdog(self) -> None:
        """The watchdog told (our end closed) and waited for: there is nothing left to stop."""
        if self._owner_end is not None:
            os.close(self._owner_end)
            self._owner_end = None
        if self.watchdog is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.watchdog.wait(30)

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


def _start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot): with the PID, which process it
    is (a PID is reused)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_gone(root: Path) -> bool:
    try:
        pid, started = (root / OWNER_FILE).read_text().split()
    except (OSError, ValueError):
        return False  # not one of ours (or an older oneroot's): left alone
    return _start_time(int(pid)) != started


def reap_stale(tmp: Path | None = None) -> list[Path]:
    """Stop and remove the temporary servers (in `tmp`, default the temporary directory) whose
    owner is gone and whose watchdog did not stop them (it was killed too); the ones of a
    running owner are left alone. Returns the directories removed."""
    reaped = []
    for root in Path(tmp or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        if not root.is_dir() or root.is_symlink() or not _owner_gone(root):
            continue
        with contextlib.suppress(LabError, subprocess.TimeoutExpired):
            PostgresServer(root=root).stop()
        shutil.rmtree(root, ignore_errors=True)
        reaped.append(root)
    return reaped


@contextmanager
def running_postgres(*, root: Path | None = None, netns: str | None = None,
                     stop_with_owner: bool = True) -> Iterator[PostgresServer]:
    """A server for the `with` block; by default it does not outlive this process either."""
    if stop_with_owner and root is None:
        reap_stale()
    server = PostgresServer(root=root, netns=netns, stop_with_owner=stop_with_owner)
    try:
        server.start()
        yield server
    finally:
        server.stop()
