"""Worker processes that each listen on a socket of their own, so the kernel spreads connections between them.

uvicorn's ``--workers`` shares one listening socket among its workers, and whichever worker wakes first accepts
the whole backlog: a client (a proxy, a load balancer, the benchmark) opening its keep-alive connections in a burst
finds most of them on one worker while the other idles, for as long as they live. The benchmark recorded all 16 of
16 connections on one of two workers, and up to 43 of 64 (``connections_per_worker``); that worker's queue sets the
tail while half the machine waits. Here each worker gets its own socket, bound to the same address with
``SO_REUSEPORT``, and Linux hashes each new connection to one of them: an even spread on average, never a whole
burst on one worker. The parent holds every socket for the life of the server, so a replaced worker takes over
its socket's queue and no connection is refused meanwhile.

Elsewhere (no ``SO_REUSEPORT``, or a kernel that does not balance it) this falls back to uvicorn's shared socket.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from uvicorn import Config
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

__all__ = ("bind_sockets", "run")


def balances_reuse_port() -> bool:
    """Whether the kernel spreads connections over sockets sharing a port (Linux ≥ 3.9 does)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets bound to ``host:port`` with ``SO_REUSEPORT`` (not listening yet: each worker listens on
    its own); ``OSError`` if another socket holds the port. Port 0 takes a free port for all of them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # A port another server holds must fail to bind, as uvicorn's own socket does: with SO_REUSEPORT a second
    # server of the same user (one started twice by mistake) would otherwise silently share its connections.
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class SocketPerWorker(Multiprocess):
    """uvicorn's supervisor (health checks, restarts, signals), with worker *i* always started on socket *i*.

    uvicorn 0.54 hands every worker ``self.sockets``; the three methods that start workers are restated here
    with the slot's socket, otherwise as uvicorn's.
    """

    def _start(self, slot: int) -> Process:
        process = Process(self.config, [self.sockets[slot]])
        process.start()
        return process

    def init_processes(self) -> None:
        for slot in range(self.processes_num):
            self.processes.append(self._start(slot))

    def restart_all(self) -> None:
        """Replace each worker, bringing its replacement into service before retiring the old one."""
        for slot, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new_process = self._start(slot)
            if not new_process.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new_process.kill()
                new_process.join()
                return
            old_process.terminate()
            old_process.join()
            self.processes[slot] = new_process

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for slot, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung: kill it
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                # It failed before serving (the app or the socket is broken): a restart would fail alike.
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            self.processes[slot] = self._start(slot)


def run(app: str, *, workers: int, **options: Any) -> None:
    """``uvicorn.run(app, workers=workers, **options)``, with a socket per worker where the kernel balances them."""
    config = Config(app, workers=workers, **options)
    if workers < 2 or config.should_reload or config.uds or config.fd is not None or not balances_reuse_port():
        import uvicorn  # noqa: PLC0415 - only this fallback needs the whole entry point

        uvicorn.run(app, workers=workers, **options)
        return
    try:
        sockets = bind_sockets(config.host, config.port, workers)
    except OSError as exc:
        logging.getLogger("uvicorn.error").error("Cannot listen on %s:%d: %s", config.host, config.port, exc)
        sys.exit(STARTUP_FAILURE)
    host, port = sockets[0].getsockname()[:2]
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on http://%s:%d, a socket per worker (Press CTRL+C to quit)", host, port
    )
    try:
        SocketPerWorker(config, sockets=sockets).run()
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets:
            sock.close()


if __name__ == "__main__":  # pragma: no cover - `python -m app.workers`, the benchmark's launcher
    import argparse

    parser = argparse.ArgumentParser(description="uvicorn with a listening socket per worker (see the docstring)")
    parser.add_argument("app")
    parser.add_argument("--factory", action="store_true")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--log-level", default="warning")
    arguments = parser.parse_args()
    run(
        arguments.app,
        factory=arguments.factory,
        host=arguments.host,
        port=arguments.port,
        workers=arguments.workers,
        log_level=arguments.log_level,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
