"""``python -m app migrate`` applies migrations; ``python -m app serve [--reload]`` migrates, then serves."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from app.config import ConfigError, load_settings
from app.db import upgrade_schema


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``just`` recipes."""
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply pending database migrations")
    serve = commands.add_parser("serve", help="apply pending migrations, then serve on HOST:PORT")
    serve.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"Invalid configuration: {exc}", file=sys.stderr)
        return 2

    upgrade_schema(settings)
    if args.command == "serve":
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            reload=args.reload,
            log_level=settings.log_level.lower(),
            proxy_headers=False,
            server_header=False,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
