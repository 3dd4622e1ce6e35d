"""A PgBouncer from Debian in transaction mode, the setup Neon's ``-pooler`` hosts use, on its own port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import free_port, terminate, wait_until

PGBOUNCER = Path("/usr/sbin/pgbouncer")


def can_run_pgbouncer() -> str | None:
    """Why PgBouncer cannot run here, or ``None`` when it can."""
    if not PGBOUNCER.exists():
        return "PgBouncer is not installed (Debian package pgbouncer; .ci/run installs it)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is needed to run PgBouncer as the postgres user (it refuses to run as root)"
    return None


@dataclass
class PgBouncer:
    """Fronts the PostgreSQL at ``server_host:server_port`` with ``pool_size`` server connections per database."""

    server_host: str
    server_port: int
    pool_size: int = 4
    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="todo-pgbouncer-")))
    process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PgBouncer:
        (self.directory / "userlist.txt").write_text('"postgres" ""\n')
        config = self.directory / "pgbouncer.ini"
        config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={self.server_host} port={self.server_port}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {self.directory / 'userlist.txt'}",
                    "pool_mode = transaction",
                    f"default_pool_size = {self.pool_size}",
                    "max_client_conn = 500",
                    f"logfile = {self.directory / 'pgbouncer.log'}",
                    "ignore_startup_parameters = extra_float_digits",
                    "",
                ]
            )
        )
        argv = [str(PGBOUNCER), str(config)]
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            for path in self.directory.iterdir():
                shutil.chown(path, "postgres", "postgres")
            argv = ["runuser", "-u", "postgres", "--", *argv]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

        def listening() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"PgBouncer exited during start-up:\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
            return False

        wait_until(listening, 15, "PgBouncer did not start listening")
        return self

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
            self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)
