"""Settings: one frozen, typed object read from the environment (and an optional ``.env``) once."""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from uuid import uuid4

import msgspec
from dotenv import dotenv_values
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

__all__ = ("ConfigError", "DatabaseTarget", "Settings", "load_settings", "parse_database_url")

logger = logging.getLogger(__name__)

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/todo.sqlite3"
#: Better Auth serves its API under this path unless ``basePath`` is changed.
BETTER_AUTH_BASE_PATH = "/api/auth"
#: HS256 keys shorter than the hash output are brute-forceable (RFC 7518 §3.2).
MIN_SECRET_LENGTH = 32


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the environment variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, dict=True):
    """Every setting of the service. Field ``foo_bar`` is read from the variable ``FOO_BAR``."""

    database_url: str = DEFAULT_DATABASE_URL
    # The direct (unpooled) URL migrations run on, when DATABASE_URL goes through a pooler; Neon's Vercel
    # integration names the pair DATABASE_URL and DATABASE_URL_UNPOOLED.
    database_url_unpooled: str | None = None
    database_pool_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 16
    # Overflow connections are closed as soon as they are returned to a full pool, so under a steady
    # burst every overflow checkout opens a new PostgreSQL backend; 0 makes excess requests queue instead.
    database_max_overflow: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    database_pool_timeout: Seconds = 5.0
    database_connect_timeout: Seconds = 10.0
    # Shorter than the pool wait: a statement that hangs gives its connection back before the requests queued
    # for one give up, so a few slow statements cannot turn into 503s for everyone else.
    database_statement_timeout: Seconds = 2.0
    # A pooled connection idle this long is pinged before use: after Neon scales to zero (or PostgreSQL
    # restarts) the pool holds dead connections, and this swaps them for fresh ones instead of failing a request.
    database_ping_after_idle_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0
    # How long `serve`/`migrate` keep retrying a database that does not answer yet (waking compute, starting
    # container) before giving up.
    database_startup_timeout: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0
    # ``None`` means: detect from the host name (Neon's pooled hosts contain ``-pooler``).
    database_pooler: bool | None = None
    database_echo: bool = False

    better_auth_url: str | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_secret: str | None = None
    jwt_leeway_seconds: Annotated[int, msgspec.Meta(ge=0, le=300)] = 30
    jwt_jwks_timeout_seconds: Seconds = 5.0
    jwt_jwks_min_refresh_interval_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 1.0
    jwt_jwks_max_age_seconds: Seconds = 300.0

    rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 600
    rate_limit_anonymous_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 120
    redis_url: str | None = None
    # Requests of one user served at once by one process (its database pool is shared by all users); more
    # wait briefly in line, then get 429. One user cannot take the pool from the others.
    max_concurrent_requests_per_user: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 4
    # Tasks one user may hold (Google Tasks caps a list at 20 000); a create beyond it is refused with 409.
    max_tasks_per_user: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 10_000

    # Sync. Tombstones of deleted tasks are kept this long; a change feed asked for an older revision answers 410.
    sync_tombstone_retention_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30
    # A response stored for an Idempotency-Key is replayed to retries for this long, then purged.
    idempotency_key_retention_hours: Annotated[int, msgspec.Meta(ge=1, le=24 * 30)] = 24
    # How often each process purges expired tombstones and idempotency keys (one process does it at a time).
    sync_purge_interval_seconds: Seconds = 3600.0
    # A comment line on each idle event stream this often keeps proxies and load balancers from closing it.
    sse_heartbeat_seconds: Seconds = 15.0
    # Event streams one user may hold open (a tab each); the next is refused with 429.
    sse_max_streams_per_user: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    # Event streams one process holds at most, whoever they belong to; the next is refused with 503.
    sse_max_streams_per_process: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 2000
    # A stream whose client has not taken an event for this long (it stopped reading) is closed, never buffered.
    sse_send_timeout_seconds: Seconds = 10.0

    cors_origins: tuple[str, ...] = ("http://localhost:3000",)
    host: str = "127.0.0.1"
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (comma list of addresses or CIDR networks):
    # the load balancer's, so per-address rate limits and audit lines see the real client, not the balancer.
    # The client is the rightmost address not in this list; "*" is refused (see _check_forwarded_allow_ips).
    forwarded_allow_ips: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    # Worker processes of `python -m app serve`; None means one per CPU (one on the embedded SQLite).
    web_concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] | None = None
    log_level: LogLevel = "INFO"
    log_format: Literal["json", "console"] = "json"
    metrics_token: Annotated[str, msgspec.Meta(min_length=16)] | None = None

    def __post_init__(self) -> None:
        # Parsed here, once: a bad URL, sslmode or sslrootcert stops the service at start, naming its variable.
        _ = self.database
        if self.database_url_unpooled is not None:
            parse_database_url(self.database_url_unpooled, name="DATABASE_URL_UNPOOLED")
        for name in ("better_auth_url", "jwt_jwks_url"):
            value = getattr(self, name)
            if value is not None:
                _check_http_url(name, value)
        if self.jwt_secret is not None and len(self.jwt_secret) < MIN_SECRET_LENGTH:
            raise ConfigError(f"JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters long")
        if self.redis_url is not None and urlsplit(self.redis_url).scheme not in {"redis", "rediss", "unix"}:
            raise ConfigError(f"REDIS_URL must be a redis://, rediss:// or unix:// URL, got {self.redis_url!r}")
        for origin in self.cors_origins:
            if origin != "*":
                _check_http_url("cors_origins", origin)
        _check_forwarded_allow_ips(self.forwarded_allow_ips)

    @cached_property
    def database(self) -> DatabaseTarget:
        """``DATABASE_URL`` as SQLAlchemy and the driver take it (``DATABASE_POOLER`` applied)."""
        return parse_database_url(self.database_url, self.database_pooler)

    @property
    def migration_settings(self) -> Settings:
        """These settings pointed at the database migrations run on (the direct URL, when one is set)."""
        if self.database_url_unpooled is None:
            return self
        return msgspec.structs.replace(self, database_url=self.database_url_unpooled, database_pooler=None)

    @property
    def jwks_url(self) -> str | None:
        """Where the asymmetric verification keys are published, if anywhere."""
        if self.jwt_jwks_url is not None:
            return self.jwt_jwks_url
        if self.better_auth_url is None:
            return None
        parts = urlsplit(self.better_auth_url)
        base = self.better_auth_url.rstrip("/")
        # BETTER_AUTH_URL is usually the bare origin; when it already carries the auth base path, keep it.
        return f"{base}/jwks" if parts.path.strip("/") else f"{base}{BETTER_AUTH_BASE_PATH}/jwks"

    @property
    def token_issuer(self) -> str | None:
        """The ``iss`` every accepted token must carry (Better Auth signs its origin)."""
        return self.jwt_issuer or _origin(self.better_auth_url)

    @property
    def token_audience(self) -> str | None:
        """The ``aud`` every accepted token must carry (Better Auth signs its origin)."""
        return self.jwt_audience or _origin(self.better_auth_url)


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> Settings:
    """Read settings from ``environ`` (default: the process environment) over an optional ``.env`` file."""
    source: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        source.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    source.update(os.environ if environ is None else environ)

    raw: dict[str, Any] = {}
    for name in Settings.__struct_fields__:
        value = source.get(name.upper())
        if value is None or value.strip() == "":
            continue
        if name == "cors_origins":
            raw[name] = _split_list(value)
        elif name == "log_level":
            raw[name] = value.strip().upper()
        elif name == "log_format":
            raw[name] = value.strip().lower()
        else:
            raw[name] = value.strip()
    try:
        # strict=False lets msgspec turn "10" into 10 and "true" into True.
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_name_setting(str(exc))) from None


def _split_list(value: str) -> list[str]:
    return [item.strip().rstrip("/") for item in value.split(",") if item.strip()]


def _name_setting(message: str) -> str:
    """Rewrite msgspec's ``- at `$.database_pool_size``` into the environment variable's name."""
    text, sep, path = message.rpartition(" - at `$.")
    if not sep:
        return message
    field = path.rstrip("`").split("[", 1)[0]
    return f"{field.upper()}: {text}"


def _origin(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _check_http_url(name: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(f"{name.upper()} must be an http(s) URL, got {value!r}")


def _check_forwarded_allow_ips(value: str) -> None:
    """Every entry an IP address or network; never ``*``.

    With ``*`` uvicorn takes the *leftmost* ``X-Forwarded-For`` entry, which the client writes itself behind any
    proxy that appends: the address limits and audit lines use would be the attacker's choice. With a list it
    takes the rightmost address that is not a trusted proxy, the first hop no client controls.
    """
    for entry in (item.strip() for item in value.split(",")):
        if entry == "*":
            raise ConfigError(
                "FORWARDED_ALLOW_IPS must list the proxies' addresses or networks (e.g. 10.0.0.0/8), not '*': "
                "with '*' a client picks its own address by sending X-Forwarded-For"
            )
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"FORWARDED_ALLOW_IPS: {entry!r} is not an IP address or network (comma-separated list)"
            ) from None


# --- the database URL ----------------------------------------------------------------------------------

_SCHEMES = frozenset({"sqlite", "sqlite+aiosqlite", "postgres", "postgresql", "postgresql+asyncpg"})
# libpq's sslmode values map one to one onto asyncpg's ``ssl`` argument.
_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


@dataclass(frozen=True)
class DatabaseTarget:
    """A ``DATABASE_URL`` translated into what SQLAlchemy and the driver accept."""

    url: str
    dialect: str
    connect_args: dict[str, Any] = field(default_factory=dict)
    pooler: bool = False


def parse_database_url(raw: str, pooler: bool | None = None, name: str = "DATABASE_URL") -> DatabaseTarget:
    """Normalise a PostgreSQL or SQLite URL, translating libpq-only query keywords for asyncpg.

    Neon hands out URLs like ``postgresql://u:p@ep-x-pooler.region.aws.neon.tech/db?sslmode=require&channel_binding=require``;
    asyncpg rejects these keywords, so ``sslmode`` (with ``sslrootcert``) becomes asyncpg's ``ssl`` and
    ``channel_binding`` is dropped.
    """
    url = _url(raw, name)
    if url.drivername.startswith("sqlite"):
        return DatabaseTarget(url=url.set(drivername="sqlite+aiosqlite").render_as_string(False), dialect="sqlite")

    kept: dict[str, str | tuple[str, ...]] = {}
    connect_args: dict[str, Any] = {}
    root_cert: str | None = None
    for key, value in url.query.items():
        last = value[-1] if isinstance(value, tuple) else value
        if key == "sslmode":
            if last not in _SSLMODES:
                raise ConfigError(f"{name}: unknown sslmode {last!r}")
            connect_args["ssl"] = last
        elif key == "sslrootcert":
            root_cert = last
        elif key == "channel_binding":
            # asyncpg's SCRAM implementation never binds to the TLS channel; verify the server's certificate
            # (sslmode=verify-full) for the protection channel binding would add.
            logger.info("%s: channel_binding is not supported by asyncpg and is ignored", name)
        elif key in {"ssl", "prepared_statement_cache_size"}:
            kept[key] = value
        elif key in {"application_name", "options"}:
            # Startup parameters, sent as libpq does (``options`` carries Neon's endpoint id for clients without SNI).
            connect_args.setdefault("server_settings", {})[key] = last
        else:
            logger.warning("%s: dropping query parameter %r, which asyncpg does not support", name, key)
    if root_cert is not None:
        connect_args["ssl"] = _verifying_context(connect_args.get("ssl"), root_cert, name)
    is_pooler = ("-pooler" in (url.host or "")) if pooler is None else pooler
    if is_pooler:
        # PgBouncer in transaction mode hands each transaction a different server connection, so
        # prepared statements must not be cached or reused by name across transactions.
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = _unique_statement_name
    url = url.set(drivername="postgresql+asyncpg", query=kept)
    return DatabaseTarget(
        url=url.render_as_string(hide_password=False),
        dialect="postgresql",
        connect_args=connect_args,
        pooler=is_pooler,
    )


def _url(raw: str, name: str) -> URL:
    scheme = raw.partition("://")[0] if "://" in raw else ""
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"{name} must start with one of {', '.join(sorted(_SCHEMES))}:// (got {scheme or 'no'} scheme)"
        )
    try:
        return make_url(raw)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"{name} is not a database URL: {exc}") from None


def _verifying_context(sslmode: str | None, root_cert: str, name: str) -> ssl.SSLContext:
    """libpq's ``sslrootcert``: the CA file the server's certificate must chain to (``system``: the OS store).

    asyncpg only reads it from libpq's environment variables, so the URL's value becomes an SSL context.
    """
    if root_cert == "system":
        sslmode = "verify-full"  # as libpq 16: trusting every public CA is only safe with the host name checked
    if sslmode not in {"require", "verify-ca", "verify-full"}:
        raise ConfigError(f"{name}: sslrootcert needs sslmode=verify-full (or verify-ca)")
    try:
        context = ssl.create_default_context(cafile=None if root_cert == "system" else root_cert)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{name}: cannot read sslrootcert {root_cert!r}: {exc}") from None
    # libpq checks the chain but not the host name for require (with a root certificate) and verify-ca.
    context.check_hostname = sslmode == "verify-full"
    return context


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid4().hex}__"
