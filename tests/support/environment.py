"""The one configuration of a service under test, whichever way it runs.

In this process, :func:`service_settings` reads it as the service reads its environment (``load_settings``,
no ``.env``); as a process, ``ApiServer(env=service_environment(...))`` is given exactly these variables. A
test that moves from one to the other keeps its meaning.
"""

from __future__ import annotations

from app.config import Settings, load_settings
from tests.support.issuer import AUDIENCE, HS_SECRET, ISSUER, JWKSServer

__all__ = ("service_environment", "service_settings")


def service_environment(
    database_url: str, jwks_server: JWKSServer | None = None, /, **overrides: object
) -> dict[str, str]:
    """The environment of a service on ``database_url`` that accepts the test issuer's tokens.

    Both key sources are configured: the shared secret (HS256) and, when ``jwks_server`` is given, its JWKS.
    Logs are warnings only. The rate limiter stays on (every request goes through it) but out of reach; tests
    of it set their own limits. ``overrides`` are settings by name in either case (``database_pool_size=1``,
    ``LOG_LEVEL="INFO"``); ``None`` removes one (``jwt_secret=None``: JWKS only).
    """
    environ = {
        "DATABASE_URL": database_url,
        "JWT_SECRET": HS_SECRET,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_PER_MINUTE": "100000",
        "RATE_LIMIT_ANONYMOUS_PER_MINUTE": "100000",
    }
    if jwks_server is not None:
        environ["JWT_JWKS_URL"] = jwks_server.url
    for name, value in overrides.items():
        if value is None:
            environ.pop(name.upper(), None)
        else:
            environ[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return environ


def service_settings(database_url: str, jwks_server: JWKSServer | None = None, /, **overrides: object) -> Settings:
    """:func:`service_environment` read as the service reads its environment, for an app in this process."""
    return load_settings(service_environment(database_url, jwks_server, **overrides), env_file=None)
