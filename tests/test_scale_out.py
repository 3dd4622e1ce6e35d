"""Scaling out: two instances (processes, ports) on one PostgreSQL and one Redis behave as one service."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from app.config import Settings
from app.db import upgrade_schema
from tests.support.databases import scratch_postgres
from tests.support.environment import service_environment
from tests.support.factories import Account
from tests.support.issuer import JWKSServer
from tests.support.prerequisites import TEST_REDIS_URL, require_redis
from tests.support.servers import ApiServer

WRITERS = 6
WRITES_PER_WRITER = 40


@pytest.fixture(scope="module")
def shared_database() -> Iterator[str]:
    with scratch_postgres("todo_scale") as url:
        upgrade_schema(Settings(database_url=url))
        yield url


def start_pair(shared_database: str, jwks_server: JWKSServer, per_minute: int) -> tuple[ApiServer, ApiServer]:
    """Two instances of two worker processes each, as a load balancer would see them, sharing PostgreSQL and Redis."""
    require_redis()
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    env = service_environment(
        shared_database,
        jwks_server,
        REDIS_URL=TEST_REDIS_URL,
        RATE_LIMIT_PER_MINUTE=str(per_minute),
        WEB_CONCURRENCY="2",
    )
    return ApiServer(env=dict(env)).start(), ApiServer(env=dict(env)).start()


@pytest.fixture(scope="module")
def instances(shared_database: str, jwks_server: JWKSServer) -> Iterator[tuple[ApiServer, ApiServer]]:
    pair = start_pair(shared_database, jwks_server, per_minute=100_000)
    yield pair
    for server in pair:
        server.stop()


@pytest.fixture(scope="module")
def limited_instances(shared_database: str, jwks_server: JWKSServer) -> Iterator[tuple[ApiServer, ApiServer]]:
    pair = start_pair(shared_database, jwks_server, per_minute=50)
    yield pair
    for server in pair:
        server.stop()


def test_a_client_alternating_between_instances_reads_its_own_writes(
    instances: tuple[ApiServer, ApiServer], make_account: Callable[..., Account]
) -> None:
    account = make_account()
    a, b = (httpx.Client(base_url=s.url, headers=account.headers) for s in instances)
    with a, b:
        created = a.post(account.tasks_url(), json={"title": "written on A"})
        read = b.get(account.tasks_url(created.json()["id"]))
        toggled = b.patch(account.tasks_url(created.json()["id"], "complete"))
        listed = a.get(account.tasks_url())

    assert created.status_code == 201
    assert read.json() == created.json()
    assert toggled.json()["completed"] is True
    assert listed.json()[0]["completed"] is True


def test_if_match_conflicts_are_detected_across_instances(
    instances: tuple[ApiServer, ApiServer], make_account: Callable[..., Account]
) -> None:
    account = make_account()
    a, b = (httpx.Client(base_url=s.url, headers=account.headers) for s in instances)
    with a, b:
        created = a.post(account.tasks_url(), json={"title": "contested"})
        etag = created.headers["etag"]
        first = a.put(account.tasks_url(created.json()["id"]), json={"title": "A wins"}, headers={"If-Match": etag})
        second = b.put(account.tasks_url(created.json()["id"]), json={"title": "B loses"}, headers={"If-Match": etag})
        final = b.get(account.tasks_url(created.json()["id"]))

    assert (first.status_code, second.status_code) == (200, 412)
    assert final.json()["title"] == "A wins"


def test_the_rate_limit_is_shared_through_redis(
    limited_instances: tuple[ApiServer, ApiServer], make_account: Callable[..., Account]
) -> None:
    account = make_account()
    clients = [httpx.Client(base_url=s.url, headers=account.headers) for s in limited_instances]
    try:
        statuses = [clients[n % 2].get(account.tasks_url()).status_code for n in range(52)]
    finally:
        for client in clients:
            client.close()

    assert statuses[:50] == [200] * 50
    assert statuses[50:] == [429, 429]


def test_concurrent_requests_on_both_instances_never_exceed_the_shared_limit(
    limited_instances: tuple[ApiServer, ApiServer], make_account: Callable[..., Account]
) -> None:
    # 8 clients x 10 requests at once, half on each instance: a read-then-write counter would lose
    # increments between the instances and let more than 50 through.
    account = make_account()
    statuses = Counter[int]()
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=limited_instances[n % 2].url, headers=account.headers, timeout=30) as http:
            for _ in range(10):
                status = http.get(account.tasks_url()).status_code
                with lock:
                    statuses[status] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert statuses == Counter({200: 50, 429: 30})


def test_concurrent_load_over_both_instances_loses_and_duplicates_nothing(
    instances: tuple[ApiServer, ApiServer], make_account: Callable[..., Account]
) -> None:
    account = make_account()
    target = None
    with httpx.Client(base_url=instances[0].url, headers=account.headers) as client:
        target = client.post(account.tasks_url(), json={"title": "toggled by everyone"}).json()["id"]
    acknowledged: list[str] = []
    toggles = Counter[int]()
    conflicts = Counter[int]()
    lock = threading.Lock()

    def writer(n: int) -> None:
        with httpx.Client(base_url=instances[n % 2].url, headers=account.headers, timeout=30) as client:
            for i in range(WRITES_PER_WRITER):
                title = f"writer {n} task {i} {uuid.uuid4().hex[:6]}"
                created = client.post(account.tasks_url(), json={"title": title})
                toggled = client.patch(account.tasks_url(target, "complete"))
                stale = client.put(account.tasks_url(target), json={"title": "stale"}, headers={"If-Match": '"1"'})
                with lock:
                    if created.status_code == 201:
                        acknowledged.append(created.json()["id"])
                    toggles[toggled.status_code] += 1
                    conflicts[stale.status_code] += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    with httpx.Client(base_url=instances[1].url, headers=account.headers) as client:
        stored = client.get(account.tasks_url(), params={"limit": 1000}).json()
        final = client.get(account.tasks_url(target))
    stored_ids = [task["id"] for task in stored if task["id"] != target]
    total = WRITERS * WRITES_PER_WRITER
    print(
        f"\n{total * 3} requests over 2 instances: {len(acknowledged)} creates acknowledged, "
        f"{toggles[200]} toggles, {conflicts[412]} stale If-Match refused (412); "
        f"{len(set(acknowledged) - set(stored_ids))} writes lost, {len(stored_ids) - len(set(stored_ids))} duplicated"
    )
    assert len(acknowledged) == total
    assert sorted(stored_ids) == sorted(acknowledged)  # none lost, none duplicated
    assert toggles == Counter({200: total})
    assert conflicts == Counter({412: total})  # every stale write refused, on either instance
    assert final.headers["etag"] == f'"{1 + total}"'  # each toggle applied exactly once
    assert final.json()["completed"] is (total % 2 == 1)
