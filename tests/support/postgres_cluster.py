"""A throwaway PostgreSQL cluster on its own port, which a test may stop and start at will.

``initdb`` and ``pg_ctl`` refuse to run as root, so they run as the ``postgres`` user (``runuser``); the
shared server on 5432 is never touched.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import free_port


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory, if any."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def can_run_clusters() -> str | None:
    """Why a throwaway cluster cannot be made here, or ``None`` when it can."""
    if postgres_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is needed to run initdb as the postgres user"
    return None


@dataclass
class ThrowawayCluster:
    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="todo-pg-")))
    #: Extra server settings (``-c name=value``) applied at every start.
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        bin_dir = postgres_bin()
        assert bin_dir is not None
        argv = [str(bin_dir / command[0]), *command[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)

    def create(self) -> ThrowawayCluster:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self.directory / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
        return self.start()

    def start(self) -> ThrowawayCluster:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off -c full_page_writes=off"
        )
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            "pg_ctl",
            "-D",
            str(self.directory / "data"),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "start",
        )
        return self

    def enable_tls(self, certificate_pem: bytes, key_pem: bytes) -> None:
        """Serve TLS with this certificate from the next start on (PostgreSQL wants the key 0600, its own)."""
        certificate, key = self.directory / "server.crt", self.directory / "server.key"
        certificate.write_bytes(certificate_pem)
        key.write_bytes(key_pem)
        key.chmod(0o600)
        if os.geteuid() == 0:
            for path in (certificate, key):
                shutil.chown(path, "postgres", "postgres")
        self.settings.update(ssl="on", ssl_cert_file=str(certificate), ssl_key_file=str(key))

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)
