"""A throwaway PostgreSQL cluster: initdb in a temp dir, loopback TCP plus a private unix socket.

PostgreSQL refuses to run as root, so when the harness runs as root the cluster belongs to the
``postgres`` OS user (the temp dir is handed over to it) and its commands run as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
from pathlib import Path

import psycopg
from psycopg import sql

from tests.harness._process import HarnessError, Service

SUPERUSER = "postgres"


def find_bin_dir() -> Path:
    """PG_BIN if set, else the newest /usr/lib/postgresql/<version>/bin, else initdb's dir on PATH."""
    configured = os.environ.get("PG_BIN")
    if configured:
        return Path(configured)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise HarnessError("PostgreSQL binaries not found: install postgresql or set PG_BIN")


class PostgresServer(Service):
    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM ("smart") would wait for every client

    def __init__(
        self,
        *,
        user: str = "app",
        password: str = "app-password",
        database: str = "app",
        port: int | None = None,
        keep: bool | None = None,
        bin_dir: Path | None = None,
        os_user: str | None = None,
    ) -> None:
        self.user = user
        self.password = password
        self.database = database
        self.bin_dir = bin_dir or find_bin_dir()
        # As root, the cluster belongs to an unprivileged OS user.
        self.os_user = os_user or (SUPERUSER if os.geteuid() == 0 else None)
        super().__init__(port=port, keep=keep)
        self.data_dir = self.tmp / "data"
        self.socket_dir = self.tmp
        if self.os_user is not None:
            account = pwd.getpwnam(self.os_user)
            os.chown(self.tmp, account.pw_uid, account.pw_gid)

    @property
    def url(self) -> str:
        return f"postgres://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def popen_options(self) -> dict[str, object]:
        if self.os_user is None:
            return {}
        account = pwd.getpwnam(self.os_user)
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        if self.os_user is not None:
            env["HOME"] = str(self.tmp)
            env["USER"] = env["LOGNAME"] = self.os_user
        env["LC_ALL"] = "C"
        return env

    def before_start(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.run_step(
            [
                str(self.bin_dir / "initdb"),
                "--pgdata", str(self.data_dir),
                "--username", SUPERUSER,
                "--auth-local", "trust",  # the private socket: setup only
                "--auth-host", "scram-sha-256",  # TCP: the app user, with its password
                "--encoding", "UTF8",
                "--locale", "C",
                "--no-sync",
            ],
            cwd=self.tmp,
            env=self.environment(),
            **self.popen_options(),
        )  # fmt: skip

    def command(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            # Throwaway data: durability off, startup and tests faster.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        args = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        return args

    def superuser_connection(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=SUPERUSER,
            dbname=dbname,
            connect_timeout=2,
            autocommit=True,
        )

    def ready(self) -> bool:
        try:
            with self.superuser_connection() as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def after_first_start(self) -> None:
        with self.superuser_connection() as conn:
            # CREATEDB: pytest-django creates its test_<name> database as this user.
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(self.user), sql.Literal(self.password)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.database), sql.Identifier(self.user)
                )
            )

    def connect(self) -> psycopg.Connection:
        """A connection as the app user over TCP, the way the app connects."""
        return psycopg.connect(self.url, connect_timeout=3, autocommit=True)
