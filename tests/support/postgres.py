"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, a random free port on
127.0.0.1, the unix socket in the same temp dir, `pg_ctl stop` at the end.

The binaries come from Debian's `postgresql` package (`.ci/run` installs it), found under
/usr/lib/postgresql/*/bin or on PATH. PostgreSQL refuses to run as root, so under root the
cluster runs as the package's `postgres` user. Durability is traded for speed here (fsync off):
the cluster dies with the test session, and what the tests check is the ledger's logic.
Does not decide whether a missing PostgreSQL skips or fails: `require_postgres()` does.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

_SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin")
REQUIRE_ENV = ("CI", "LETHE_REQUIRE_POSTGRES")


def find_bin_dir() -> Path | None:
    """The newest PostgreSQL server bin dir (initdb, pg_ctl, postgres), or None."""
    candidates = sorted((Path(d) for pattern in _SEARCH for d in glob.glob(pattern)),
                        key=lambda d: _major(d), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for d in candidates:
        if all((d / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _major(bin_dir: Path) -> int:
    try:
        return int(bin_dir.parent.name)
    except ValueError:
        return 0


def postgres_required() -> bool:
    """In CI a missing PostgreSQL is a failure, never a silent skip."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no") for name in REQUIRE_ENV)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="lethe-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.port = _free_port()
        self.user = "lethe"
        self._run_as = self._service_user()

    def _service_user(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        pw = pwd.getpwnam("postgres")  # created by Debian's package
        os.chown(self.root, pw.pw_uid, pw.pw_gid)
        return ["runuser", "-u", "postgres", "--"]

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self._run_as, str(self.bin_dir / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> PostgresCluster:
        self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        self.start_server()
        return self

    def stop_server(self) -> None:
        """Stop the database, keeping its data (a restart or an outage, for fault tests)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def start_server(self) -> None:
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", options, "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A fresh empty database; its URL. One per test keeps tests independent."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def dump(self, url: str) -> bytes:
        """Every row of the database at `url`, as pg_dump writes it (what a backup would keep)."""
        done = subprocess.run([str(self.bin_dir / "pg_dump"), "--data-only", url], capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout
