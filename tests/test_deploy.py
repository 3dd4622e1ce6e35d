"""docs/deploy.md, run here: what a Neon deployment relies on, against PostgreSQL set up the same way.

- A Neon connection string pasted as-is (``sslmode=require&channel_binding=require``) reaches a PostgreSQL
  that the test switched to TLS, and every connection the service opens is encrypted; ``verify-full``
  with ``sslrootcert`` accepts the right server certificate and refuses another.
- The ``-pooler`` setup: the service through PgBouncer in transaction mode (Debian's, started by the test)
  with fewer server connections than clients, migrations on the direct URL.
- Scale-to-zero: start-up waits for a database that is still waking; connections a suspend cut are
  replaced before any request uses them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db import upgrade_schema
from tests.support.environment import service_environment
from tests.support.factories import Account
from tests.support.issuer import JWKSServer
from tests.support.pgbouncer import PgBouncer, can_run_pgbouncer
from tests.support.postgres_cluster import ThrowawayCluster
from tests.support.prerequisites import require
from tests.support.servers import ApiServer
from tests.support.tls import CertificateAuthority


async def _fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    parsed = make_url(url)
    connection = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user="postgres", database=parsed.database or "postgres", ssl=False
    )
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    """Run ``query`` on the database of ``url`` directly (as the operator, not through the service)."""
    return asyncio.run(_fetch(url, query, *args))


def exercise(server: ApiServer, account: Account) -> None:
    """Every route once, as a frontend would; each must succeed."""
    with httpx.Client(base_url=server.url, headers=account.headers, timeout=15) as client:
        created = client.post(account.tasks_url(), json={"title": "deployed"})
        assert created.status_code == 201, created.text
        task = account.tasks_url(created.json()["id"])
        assert client.get(task).status_code == 200
        assert client.put(task, json={"description": "on Neon"}).status_code == 200
        assert client.patch(f"{task}/complete").json()["completed"] is True
        assert client.get(account.tasks_url()).headers["x-total-count"] == "1"
        assert client.delete(task).status_code == 204


# --- TLS ------------------------------------------------------------------------------------------------


@pytest.fixture
def tls_cluster(cluster: ThrowawayCluster) -> tuple[ThrowawayCluster, Path]:
    """The test's cluster serving TLS with a certificate for 127.0.0.1; returns it and its CA file."""
    authority = CertificateAuthority.create()
    server_certificate = authority.issue("127.0.0.1")
    cluster.enable_tls(server_certificate.certificate_pem, server_certificate.key_pem)
    cluster.restart()
    ca_file = cluster.directory / "root.crt"
    ca_file.write_text(authority.pem)
    return cluster, ca_file


def test_a_neon_connection_string_pasted_as_is_connects_over_tls(
    tls_cluster: tuple[ThrowawayCluster, Path], jwks_server: JWKSServer, make_account: Callable[..., Account]
) -> None:
    cluster, _ = tls_cluster
    application = f"todo-tls-{uuid.uuid4().hex[:8]}"
    neon_style = (
        f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
        f"?sslmode=require&channel_binding=require&application_name={application}"
    )
    server = ApiServer(env=service_environment(neon_style, jwks_server)).start()
    try:
        exercise(server, make_account())
        sessions = fetch(
            cluster.url,
            "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
            " WHERE a.application_name = $1",
            application,
        )
    finally:
        server.stop()

    assert sessions, "the service holds no connection to the database"
    assert all(session["ssl"] for session in sessions), sessions
    assert {session["version"] for session in sessions} <= {"TLSv1.2", "TLSv1.3"}


def test_verify_full_accepts_the_servers_certificate_and_refuses_another(
    tls_cluster: tuple[ThrowawayCluster, Path], jwks_server: JWKSServer, make_account: Callable[..., Account]
) -> None:
    cluster, ca_file = tls_cluster
    stranger = cluster.directory / "other-root.crt"
    stranger.write_text(CertificateAuthority.create("Someone else's CA").pem)

    def url(root_certificate: Path) -> str:
        return f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres?sslmode=verify-full&sslrootcert={root_certificate}"

    trusted = ApiServer(env=service_environment(url(ca_file), jwks_server)).start()
    try:
        exercise(trusted, make_account())
    finally:
        trusted.stop()

    # A certificate that does not chain to the configured CA is not retried as if the database were waking:
    # the service refuses to start at once and says why.
    with pytest.raises(RuntimeError, match="certificate verify failed") as refused:
        ApiServer(env=service_environment(url(stranger), jwks_server, DATABASE_STARTUP_TIMEOUT="30")).start(timeout=20)
    assert "Cannot start" in str(refused.value)


# --- PgBouncer in transaction mode ------------------------------------------------------------------------


@pytest.fixture
def pgbouncer(postgres_database_url: str) -> Iterator[tuple[PgBouncer, str]]:
    """PgBouncer in transaction mode in front of a fresh database; yields it and the direct URL."""
    reason = can_run_pgbouncer()
    require(reason is None, str(reason))
    direct = make_url(postgres_database_url)
    bouncer = PgBouncer(server_host=str(direct.host), server_port=int(direct.port or 5432), pool_size=4).start()
    try:
        yield bouncer, postgres_database_url
    finally:
        bouncer.stop()


def test_the_service_runs_through_pgbouncer_in_transaction_mode(
    pgbouncer: tuple[PgBouncer, str], jwks_server: JWKSServer, make_account: Callable[..., Account]
) -> None:
    bouncer, direct_url = pgbouncer
    database = str(make_url(direct_url).database)
    env = service_environment(
        bouncer.url(database),
        jwks_server,
        DATABASE_POOLER="true",  # a Neon "-pooler" host name sets this by itself
        DATABASE_URL_UNPOOLED=direct_url,  # migrations run on the direct connection
        DATABASE_POOL_SIZE="16",  # four times PgBouncer's server connections
    )
    server = ApiServer(env=env).start()
    account = make_account()
    try:
        exercise(server, account)
        with httpx.Client(base_url=server.url, headers=account.headers, timeout=30) as client:
            target = client.post(account.tasks_url(), json={"title": "toggled through the pooler"}).json()["id"]

        def work(n: int) -> tuple[int, int]:
            with httpx.Client(base_url=server.url, headers=account.headers, timeout=30) as client:
                created = client.post(account.tasks_url(), json={"title": f"pooled {n}"}).status_code
                toggled = client.patch(account.tasks_url(target, "complete")).status_code
                return created, toggled

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = Counter(status for pair in pool.map(work, range(64)) for status in pair)
        with httpx.Client(base_url=server.url, headers=account.headers, timeout=30) as client:
            final = client.get(account.tasks_url(target))
            listed = client.get(account.tasks_url(), params={"limit": 1000})
        server_connections = fetch(
            direct_url,
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
            database,
        )[0]["n"]
    finally:
        server.stop()

    assert statuses == Counter({201: 64, 200: 64}), bouncer.log()[-2000:]
    assert final.headers["etag"] == '"65"'  # 64 toggles, each applied exactly once
    assert final.json()["completed"] is False
    assert listed.headers["x-total-count"] == "65"
    # the 16 connections of the service's pool shared PgBouncer's 4 (+ this query's own direct one, + the direct one
    # that LISTENs for task changes: app/sync/listener.py)
    assert server_connections <= 6


# --- scale to zero ---------------------------------------------------------------------------------------


def test_start_up_waits_for_a_database_that_is_still_waking(
    cluster: ThrowawayCluster, jwks_server: JWKSServer, make_account: Callable[..., Account]
) -> None:
    cluster.stop()
    server = ApiServer(env=service_environment(cluster.url, jwks_server, DATABASE_STARTUP_TIMEOUT="60")).launch()
    try:
        # The compute "wakes" once the service has found it asleep and said it is waiting for it.
        server.wait_for_log("Database not reachable yet")
        cluster.start()
        server.wait_until_serving(timeout=60)
        exercise(server, make_account())
    finally:
        server.stop()


def test_connections_a_suspend_cut_are_replaced_before_a_request_uses_them(
    cluster: ThrowawayCluster, jwks_server: JWKSServer, make_account: Callable[..., Account]
) -> None:
    # 0: every pooled connection is checked before use, however briefly it sat idle (no waiting for the test).
    checked = ApiServer(env=service_environment(cluster.url, jwks_server, DATABASE_PING_AFTER_IDLE_SECONDS="0")).start()
    unchecked = ApiServer(
        env=service_environment(cluster.url, jwks_server, DATABASE_PING_AFTER_IDLE_SECONDS="3600")
    ).start()
    account = make_account()
    try:
        for server in (checked, unchecked):
            with httpx.Client(base_url=server.url, headers=account.headers, timeout=15) as client:
                assert client.get(account.tasks_url()).status_code == 200
        cluster.restart()  # what a suspend does to open connections: the server side is gone
        with httpx.Client(base_url=checked.url, headers=account.headers, timeout=15) as client:
            after_checked = [client.get(account.tasks_url()).status_code for _ in range(5)]
        with httpx.Client(base_url=unchecked.url, headers=account.headers, timeout=15) as client:
            after_unchecked = [client.get(account.tasks_url()).status_code for _ in range(5)]
    finally:
        checked.stop()
        unchecked.stop()

    assert after_checked == [200] * 5
    # Without the idle check the first request meets the dead connection (a 503 the client must retry).
    assert after_unchecked == [503, 200, 200, 200, 200]


# --- behind the load balancer -----------------------------------------------------------------------------


@pytest.mark.parametrize(("trusted", "shared_bucket"), [("127.0.0.1", False), ("10.0.0.1", True)])
def test_forwarded_addresses_count_only_from_trusted_proxies(
    postgres_database_url: str, jwks_server: JWKSServer, trusted: str, shared_bucket: bool
) -> None:
    # The test's requests come from 127.0.0.1: as the load balancer when it is trusted, as a stranger when not.
    upgrade_schema(Settings(database_url=postgres_database_url))
    env = service_environment(
        postgres_database_url, jwks_server, RATE_LIMIT_ANONYMOUS_PER_MINUTE="2", FORWARDED_ALLOW_IPS=trusted
    )
    server = ApiServer(env=env).start()
    try:
        with httpx.Client(base_url=server.url) as client:

            def anonymous(client_address: str) -> int:
                return client.get("/api/someone/tasks", headers={"X-Forwarded-For": client_address}).status_code

            first = [anonymous("203.0.113.7") for _ in range(3)]
            other = anonymous("198.51.100.9")
    finally:
        server.stop()

    assert first == [401, 401, 429]
    # Trusted: another client has its own budget. Untrusted: the header is ignored, everyone is 127.0.0.1.
    assert other == (429 if shared_bucket else 401)


def test_a_client_cannot_pick_its_address_by_writing_x_forwarded_for(
    postgres_database_url: str, jwks_server: JWKSServer
) -> None:
    # Behind a proxy that appends the peer it saw, the client controls every entry left of it. The service must
    # take the rightmost address its trusted proxies did not add: here the one the "proxy" (127.0.0.1) appended.
    upgrade_schema(Settings(database_url=postgres_database_url))
    env = service_environment(
        postgres_database_url, jwks_server, RATE_LIMIT_ANONYMOUS_PER_MINUTE="20", FORWARDED_ALLOW_IPS="127.0.0.1"
    )
    server = ApiServer(env=env).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            statuses = [
                client.get(
                    "/api/someone/tasks", headers={"X-Forwarded-For": f"198.51.100.{n}, 203.0.113.7"}
                ).status_code
                for n in range(25)
            ]
    finally:
        server.stop()

    assert statuses == [401] * 20 + [429] * 5
