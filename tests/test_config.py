"""Configuration: typed settings from the environment, clear failures, and DATABASE_URL translation."""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

import pytest

from app.__main__ import _default_workers
from app.config import DEFAULT_DATABASE_URL, ConfigError, Settings, load_settings, parse_database_url
from tests.support.tls import CertificateAuthority

NEON_URL = (
    "postgresql://alex:AbC123dEf@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/dbname"
    "?sslmode=require&channel_binding=require"
)


def test_defaults_serve_the_embedded_database_on_localhost() -> None:
    settings = load_settings({}, env_file=None)

    assert settings.database_url == DEFAULT_DATABASE_URL
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.cors_origins == ("http://localhost:3000",)
    assert settings.jwks_url is None


def test_values_are_read_and_typed_from_the_environment() -> None:
    settings = load_settings(
        {
            "PORT": "9000",
            "DATABASE_POOL_SIZE": "3",
            "DATABASE_POOLER": "true",
            "CORS_ORIGINS": "https://app.example.com, http://localhost:3000/ ,",
            "LOG_LEVEL": "debug",
            "JWT_LEEWAY_SECONDS": "5",
        },
        env_file=None,
    )

    assert settings.port == 9000
    assert settings.database_pool_size == 3
    assert settings.database_pooler is True
    assert settings.cors_origins == ("https://app.example.com", "http://localhost:3000")
    assert settings.log_level == "DEBUG"
    assert settings.jwt_leeway_seconds == 5


def test_the_environment_overrides_the_dotenv_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=7000\nHOST=0.0.0.0\n")

    settings = load_settings({"PORT": "7100"}, env_file=env_file)

    assert (settings.host, settings.port) == ("0.0.0.0", 7100)  # noqa: S104


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"DATABASE_POOL_SIZE": "0"}, "DATABASE_POOL_SIZE"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({"JWT_SECRET": "too-short"}, "JWT_SECRET"),
        ({"BETTER_AUTH_URL": "localhost:3000"}, "BETTER_AUTH_URL"),
        ({"JWT_JWKS_URL": "ftp://keys.example"}, "JWT_JWKS_URL"),
        ({"DATABASE_URL": "mysql://root@localhost/db"}, "DATABASE_URL"),
        ({"CORS_ORIGINS": "not a url"}, "CORS_ORIGINS"),
        ({"DATABASE_POOLER": "sometimes"}, "DATABASE_POOLER"),
        # With "*" uvicorn believes the leftmost X-Forwarded-For entry, which the client writes itself.
        ({"FORWARDED_ALLOW_IPS": "*"}, "FORWARDED_ALLOW_IPS"),
        ({"FORWARDED_ALLOW_IPS": "10.0.0.1, *"}, "FORWARDED_ALLOW_IPS"),
        ({"FORWARDED_ALLOW_IPS": "load-balancer"}, "FORWARDED_ALLOW_IPS"),
        ({"MAX_TASKS_PER_USER": "0"}, "MAX_TASKS_PER_USER"),
        ({"MAX_CONCURRENT_REQUESTS_PER_USER": "0"}, "MAX_CONCURRENT_REQUESTS_PER_USER"),
    ],
)
def test_invalid_settings_fail_at_start_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environ, env_file=None)


def test_forwarded_allow_ips_takes_addresses_and_networks() -> None:
    settings = load_settings({"FORWARDED_ALLOW_IPS": "10.0.0.0/8, 192.0.2.7,::1, fd00::/8"}, env_file=None)

    assert settings.forwarded_allow_ips == "10.0.0.0/8, 192.0.2.7,::1, fd00::/8"


@pytest.mark.parametrize(
    ("better_auth_url", "jwks", "origin"),
    [
        ("http://localhost:3000", "http://localhost:3000/api/auth/jwks", "http://localhost:3000"),
        ("https://app.example.com/", "https://app.example.com/api/auth/jwks", "https://app.example.com"),
        ("https://app.example.com/api/auth", "https://app.example.com/api/auth/jwks", "https://app.example.com"),
    ],
)
def test_better_auth_url_derives_jwks_issuer_and_audience(better_auth_url: str, jwks: str, origin: str) -> None:
    settings = Settings(better_auth_url=better_auth_url)

    assert (settings.jwks_url, settings.token_issuer, settings.token_audience) == (jwks, origin, origin)


def test_explicit_jwt_settings_override_better_auth() -> None:
    settings = Settings(
        better_auth_url="http://localhost:3000",
        jwt_jwks_url="https://keys.example/jwks.json",
        jwt_issuer="https://issuer.example",
        jwt_audience="todo-api",
    )

    assert settings.jwks_url == "https://keys.example/jwks.json"
    assert (settings.token_issuer, settings.token_audience) == ("https://issuer.example", "todo-api")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+asyncpg"])
def test_postgres_url_spellings_all_use_asyncpg(scheme: str) -> None:
    target = parse_database_url(f"{scheme}://user:p%40ss@db.example:6543/app")

    assert target.dialect == "postgresql"
    assert target.url == "postgresql+asyncpg://user:p%40ss@db.example:6543/app"
    assert target.pooler is False


def test_a_neon_url_pasted_as_is_is_translated_for_asyncpg(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="app.config"):
        target = parse_database_url(NEON_URL)

    assert target.url.startswith("postgresql+asyncpg://alex:AbC123dEf@ep-cool-darkness-123456-pooler.")
    assert "sslmode" not in target.url
    assert "channel_binding" not in target.url
    assert target.connect_args["ssl"] == "require"
    assert "channel_binding" in caplog.text


def test_a_pooler_host_disables_server_side_prepared_statement_caches() -> None:
    target = parse_database_url(NEON_URL)

    assert target.pooler is True
    assert target.connect_args["statement_cache_size"] == 0
    assert target.connect_args["prepared_statement_cache_size"] == 0
    names = {target.connect_args["prepared_statement_name_func"]() for _ in range(3)}
    assert len(names) == 3


def test_the_pooler_setting_overrides_detection() -> None:
    assert parse_database_url(NEON_URL, pooler=False).pooler is False
    assert parse_database_url("postgresql://u@localhost/db", pooler=True).pooler is True


def test_an_unknown_sslmode_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="sslmode"):
        parse_database_url("postgresql://u@localhost/db?sslmode=sometimes")


def test_sslrootcert_becomes_a_verifying_context(tmp_path: Path) -> None:
    ca = tmp_path / "root.crt"
    ca.write_text(CertificateAuthority.create().pem)

    full = parse_database_url(f"postgresql://u@db.example/app?sslmode=verify-full&sslrootcert={ca}")
    chain_only = parse_database_url(f"postgresql://u@db.example/app?sslmode=verify-ca&sslrootcert={ca}")

    assert isinstance(full.connect_args["ssl"], ssl.SSLContext)
    assert full.connect_args["ssl"].verify_mode == ssl.CERT_REQUIRED
    assert full.connect_args["ssl"].check_hostname is True
    assert chain_only.connect_args["ssl"].check_hostname is False
    assert "sslrootcert" not in full.url


def test_sslrootcert_system_means_verify_full_against_the_os_store() -> None:
    context = parse_database_url("postgresql://u@db.example/app?sslrootcert=system").connect_args["ssl"]

    assert context.check_hostname is True
    assert context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    "query", ["sslmode=disable&sslrootcert=/nonexistent.crt", "sslmode=verify-full&sslrootcert=/nonexistent.crt"]
)
def test_an_unusable_sslrootcert_is_a_configuration_error(query: str) -> None:
    with pytest.raises(ConfigError, match="sslrootcert"):
        parse_database_url(f"postgresql://u@db.example/app?{query}")


def test_sqlite_urls_use_aiosqlite() -> None:
    assert parse_database_url("sqlite:///./var/todo.sqlite3").url == "sqlite+aiosqlite:///./var/todo.sqlite3"
    assert parse_database_url(DEFAULT_DATABASE_URL).dialect == "sqlite"


def test_env_example_documents_every_setting_and_loads() -> None:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    documented = {
        line.lstrip("# ").split("=", 1)[0]
        for line in example.read_text().splitlines()
        if "=" in line and line.lstrip("# ").split("=", 1)[0].isupper()
    }

    assert {name.upper() for name in Settings.__struct_fields__} <= documented
    load_settings({}, env_file=example)


def test_libpq_startup_parameters_become_asyncpg_server_settings() -> None:
    target = parse_database_url("postgresql://u@localhost/db?application_name=todo&options=endpoint%3Dep-abc")

    assert target.connect_args["server_settings"] == {"application_name": "todo", "options": "endpoint=ep-abc"}
    assert "application_name" not in target.url


def test_serve_runs_one_worker_per_cpu_on_postgresql_and_one_on_sqlite() -> None:
    postgres = Settings(database_url="postgresql://u@db.example/app")

    assert _default_workers(postgres) == (os.cpu_count() or 1)
    assert _default_workers(Settings()) == 1  # the embedded SQLite file has one writer at a time
