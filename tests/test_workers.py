"""Several workers: each listens on a socket of its own, so a burst of connections cannot all land on one.

``python -m app serve`` with ``WEB_CONCURRENCY=2`` binds one ``SO_REUSEPORT`` socket per worker (app/workers.py);
uvicorn's shared socket let whichever worker woke first accept a whole burst (the benchmark saw 16 of 16).
Read from the kernel with ``ss``, as the benchmark reads it.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.workers import bind_sockets
from tests.support.environment import service_environment
from tests.support.factories import Account
from tests.support.issuer import JWKSServer
from tests.support.prerequisites import require
from tests.support.servers import ApiServer, wait_until

BURST = 32


def ss(*arguments: str) -> list[str]:
    require(shutil.which("ss") is not None, "ss (iproute2) is needed to read sockets from the kernel")
    listing = subprocess.run(["ss", "-tnpH", *arguments], capture_output=True, text=True, check=True, timeout=10)
    return listing.stdout.splitlines()


def worker_pids(server: ApiServer) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker, also its child)."""
    assert server.process is not None
    found = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True, check=False)
    return {int(pid) for pid in found.stdout.split() if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}


@pytest.fixture
def two_workers(postgres_database_url: str, jwks_server: JWKSServer) -> Iterator[ApiServer]:
    server = ApiServer(env=service_environment(postgres_database_url, jwks_server, WEB_CONCURRENCY="2")).start()
    # /health answered means one worker serves; a socket is listening once its worker has started.
    wait_until(lambda: len(ss("-l", f"( sport = :{server.port} )")) == 2, 30, "both workers listening")
    yield server
    server.stop()


def test_each_worker_listens_on_a_socket_of_its_own(two_workers: ApiServer) -> None:
    workers = worker_pids(two_workers)
    listening = ss("-l", f"( sport = :{two_workers.port} )")
    assert len(listening) == 2, listening
    holders = [{int(pid) for pid in re.findall(r"pid=(\d+)", line)} & workers for line in listening]
    assert all(len(held) == 1 for held in holders), listening  # one worker per socket (and the supervisor)
    assert holders[0] != holders[1]


def test_a_burst_of_connections_is_served_by_both_workers(two_workers: ApiServer, alice: Account) -> None:
    workers = worker_pids(two_workers)
    assert len(workers) == 2
    request = (
        f"GET {alice.tasks_url()} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice.token}\r\n\r\n"
    ).encode()
    connections = [socket.create_connection(("127.0.0.1", two_workers.port), timeout=10) for _ in range(BURST)]
    try:
        for connection in connections:
            connection.sendall(request)
        for connection in connections:  # every connection answered, and kept open (keep-alive)
            assert connection.recv(64).startswith(b"HTTP/1.1 200")
        established = ss("state", "established", f"( sport = :{two_workers.port} )")
        held = [int(pid) for line in established for pid in re.findall(r"pid=(\d+)", line) if int(pid) in workers]
        assert len(held) == BURST
        # The kernel hashes each connection to one of the sockets: all 32 on one worker would be a 1 in 2^31 draw.
        assert {held.count(worker) > 0 for worker in workers} == {True}, held
    finally:
        for connection in connections:
            connection.close()


def test_sockets_for_workers_share_one_port_even_when_the_port_is_chosen_by_the_kernel() -> None:
    sockets = bind_sockets("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1
        assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()


def test_a_port_another_server_listens_on_is_refused_even_if_it_shares_with_reuse_port() -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(OSError, match="Address already in use"):
            bind_sockets("127.0.0.1", other.getsockname()[1], 2)
