"""Command line of the service, behind the ``just`` recipes.

``python -m app serve [--reload]``  wait for the database, apply pending migrations, then serve on HOST:PORT
                                   with WEB_CONCURRENCY workers
``python -m app migrate``           apply pending migrations
``python -m app revision MESSAGE``  autogenerate a migration from the models (review it before committing)
``python -m app token USER_ID``     print an HS256 token signed with JWT_SECRET, for local development
``python -m app docs-assets``       fetch the pinned Scalar bundle so /schema/scalar needs no CDN
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jwt
from advanced_alchemy.extensions.litestar import AlembicCommands
from sqlalchemy.exc import DBAPIError

from app.config import ConfigError, Settings, load_settings
from app.db import DatabaseUnreachableError, alchemy_config, create_engine, upgrade_schema, wait_for_database
from app.docs import install_scalar_bundle
from app.workers import run as workers_run

#: How long a SIGTERM waits for requests in flight before closing anyway.
GRACEFUL_SHUTDOWN_SECONDS = 30


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="apply pending migrations, then serve on HOST:PORT")
    serve.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    commands.add_parser("migrate", help="apply pending database migrations")
    revision = commands.add_parser("revision", help="autogenerate a migration from the models")
    revision.add_argument("message")
    token = commands.add_parser("token", help="print a development token signed with JWT_SECRET")
    token.add_argument("user_id")
    token.add_argument("--email", default=None)
    token.add_argument("--name", default=None)
    token.add_argument("--ttl", type=int, default=3600, help="seconds until the token expires")
    commands.add_parser("docs-assets", help="fetch the pinned Scalar bundle for offline docs")
    return parser


def _migrate(settings: Settings) -> None:
    asyncio.run(wait_for_database(settings.migration_settings))
    upgrade_schema(settings)


def _default_workers(settings: Settings) -> int:
    # The embedded SQLite file takes one writer at a time: more processes only queue on its lock.
    if settings.database_url.startswith("sqlite"):
        return 1
    return os.cpu_count() or 1


def _serve(settings: Settings, *, reload: bool) -> None:
    # Migrations run once, here, before any worker starts: workers never race to apply them.
    _migrate(settings)
    workers = 1 if reload else settings.web_concurrency or _default_workers(settings)
    if workers > 1 and settings.redis_url is None and settings.rate_limit_per_minute > 0:
        print(  # before logging is configured, which happens in each worker
            f"warning: {workers} workers without REDIS_URL: each worker counts rate limits on its own, "
            f"so a client may get up to {workers}x RATE_LIMIT_PER_MINUTE",
            file=sys.stderr,
        )
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Each worker writes its metrics to files here, so whichever worker answers /metrics reports them all.
        metrics_dir = Path(tempfile.mkdtemp(prefix="todo-api-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    # A listening socket per worker (app/workers.py): uvicorn's shared one let a burst of connections all land on
    # one worker.
    workers_run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        reload=reload,
        workers=1 if reload else workers,
        log_level=settings.log_level.lower(),
        access_log=False,  # the service logs every request itself, with its request id and route
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        # On SIGTERM: stop accepting, finish what is in flight (for at most this long), then shut down.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


def _token(settings: Settings, user_id: str, email: str | None, name: str | None, ttl: int) -> str:
    if settings.jwt_secret is None:
        raise ConfigError("JWT_SECRET must be set to mint development tokens")
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + ttl}
    claims.update({k: v for k, v in {"email": email, "name": name}.items() if v is not None})
    claims.update({k: v for k, v in {"iss": settings.token_issuer, "aud": settings.token_audience}.items() if v})
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit status 2 on invalid configuration."""
    args = _parser().parse_args(argv)
    if args.command == "docs-assets":
        print(install_scalar_bundle())
        return 0
    try:
        settings = load_settings()
        if args.command == "serve":
            _serve(settings, reload=args.reload)
        elif args.command == "migrate":
            _migrate(settings)
        elif args.command == "revision":
            migration = settings.migration_settings
            config = alchemy_config(migration, engine=create_engine(migration, pooled=False))
            AlembicCommands(sqlalchemy_config=config).revision(message=args.message, autogenerate=True)
        elif args.command == "token":
            print(_token(settings, args.user_id, args.email, args.name, args.ttl))
    except ConfigError as exc:
        print(f"Invalid configuration: {exc}", file=sys.stderr)
        return 2
    except DatabaseUnreachableError as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return 1
    except DBAPIError as exc:
        # e.g. a migration that timed out waiting for a table lock; it rolled back whole, so retrying is safe.
        print(f"Migration failed and was rolled back: {exc.orig or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
