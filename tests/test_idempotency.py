"""Idempotent retries: a write sent again with the same `Idempotency-Key` gets the first response back and writes
nothing; the key and the write commit together, so not even a crash between them can break that."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, event, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.db import create_engine, upgrade_schema
from app.idempotency import purge_expired_keys
from app.models import IdempotencyKey, Task, User, utcnow
from tests.support.environment import service_environment
from tests.support.factories import Account, create_task
from tests.support.issuer import JWKSServer
from tests.support.proxies import response_withholding_proxy
from tests.support.servers import ApiServer, app_of, served_openapi_document, until

AppClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def keyed(account: Account, key: str | bytes) -> dict[str, Any]:
    return {**account.headers, "Idempotency-Key": key}


async def listed(client: httpx.AsyncClient, account: Account) -> list[dict[str, Any]]:
    return list((await client.get(account.tasks_url(), params={"sort": "title"}, headers=account.headers)).json())


async def owner_revision(db: AsyncEngine, account: Account) -> int:
    """The user's revision: every write to one of their tasks moves it on, so an unchanged one means no write."""
    async with db.connect() as connection:
        return int(await connection.scalar(select(User.revision).where(User.id == account.id)) or 0)


async def stored_keys(db: AsyncEngine, account: Account) -> dict[str, int]:
    """The user's stored keys and the status each keeps."""
    async with db.connect() as connection:
        rows = await connection.execute(
            select(IdempotencyKey.key, IdempotencyKey.status_code).where(IdempotencyKey.user_id == account.id)
        )
        return {row.key: row.status_code for row in rows}


async def expire(db: AsyncEngine, account: Account, key: str) -> None:
    """Let the key's retention pass."""
    async with db.begin() as connection:
        await connection.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.user_id == account.id, IdempotencyKey.key == key)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return dict(response.json())


def assert_names_the_header(response: httpx.Response) -> None:
    problem = assert_problem(response, 422)
    assert [(e["field"], e["source"]) for e in problem["errors"]] == [("Idempotency-Key", "header")]


#: Each write route, as (method, url, request options) for a user and one of their tasks (a completed one).
WRITES: dict[str, Callable[[Account, dict[str, Any]], tuple[str, str, dict[str, Any]]]] = {
    "create": lambda account, task: ("POST", account.tasks_url(), {"json": {"title": "once"}}),
    "update": lambda account, task: ("PUT", account.tasks_url(task["id"]), {"json": {"title": "renamed"}}),
    "toggle": lambda account, task: ("PATCH", account.tasks_url(task["id"], "complete"), {}),
    "delete": lambda account, task: ("DELETE", account.tasks_url(task["id"]), {}),
    "toggle all": lambda account, task: ("PATCH", account.tasks_url(), {"json": {"completed": False}}),
    "clear completed": lambda account, task: ("DELETE", account.tasks_url(), {"params": {"completed": "true"}}),
}


@pytest.mark.parametrize("write", list(WRITES))
async def test_a_retry_gets_the_stored_response_and_writes_nothing(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account, write: str
) -> None:
    method, url, options = WRITES[write](alice, await create_task(client, alice, completed=True))
    first = await client.request(method, url, headers=keyed(alice, "retry-me"), **options)
    revision, tasks = await owner_revision(db, alice), await listed(client, alice)

    retry = await client.request(method, url, headers=keyed(alice, "retry-me"), **options)

    assert 200 <= first.status_code < 300, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert retry.status_code == first.status_code
    assert retry.content == first.content
    assert retry.headers.get("Location") == first.headers.get("Location")
    assert retry.headers.get("ETag") == first.headers.get("ETag")
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert await owner_revision(db, alice) == revision
    assert await listed(client, alice) == tasks
    assert await stored_keys(db, alice) == {"retry-me": first.status_code}


async def test_a_retried_create_returns_the_first_task_with_its_location(
    client: httpx.AsyncClient, alice: Account
) -> None:
    first = await client.post(alice.tasks_url(), json={"title": "once"}, headers=keyed(alice, "create-1"))
    retry = await client.post(alice.tasks_url(), json={"title": "once"}, headers=keyed(alice, "create-1"))

    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["Location"].endswith(f"/tasks/{first.json()['id']}")
    assert [task["id"] for task in await listed(client, alice)] == [first.json()["id"]]


async def test_without_a_key_a_retry_is_a_new_request(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    for _ in range(2):
        response = await client.post(alice.tasks_url(), json={"title": "twice"}, headers=alice.headers)
        assert response.status_code == 201
        assert "Idempotent-Replayed" not in response.headers

    assert len(await listed(client, alice)) == 2
    assert await stored_keys(db, alice) == {}


async def test_a_write_without_a_key_runs_no_statement_for_keys(client: httpx.AsyncClient, alice: Account) -> None:
    task = await create_task(client, alice)
    engine = next(value for value in app_of(client).state.dict().values() if isinstance(value, AsyncEngine))
    statements: list[str] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        response = await client.patch(alice.tasks_url(task["id"], "complete"), headers=alice.headers)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)

    assert response.status_code == 200
    assert statements
    assert [s for s in statements if "idempotency_keys" in s or "lock_timeout" in s] == []


@pytest.mark.parametrize("change", ["body", "path", "query", "method"])
async def test_the_same_key_for_another_request_is_422_and_writes_nothing(
    client: httpx.AsyncClient, alice: Account, change: str
) -> None:
    task, other = await create_task(client, alice, title="a"), await create_task(client, alice, title="b")
    url = alice.tasks_url(task["id"])
    first = await client.put(url, json={"title": "a2"}, headers=keyed(alice, "k"))
    assert first.status_code == 200
    method, target, body = {
        "body": ("PUT", url, {"title": "a3"}),
        "path": ("PUT", alice.tasks_url(other["id"]), {"title": "a2"}),
        "query": ("PUT", f"{url}?again=1", {"title": "a2"}),
        "method": ("DELETE", url, {"title": "a2"}),
    }[change]

    response = await client.request(method, target, json=body, headers=keyed(alice, "k"))

    assert_names_the_header(response)
    assert sorted(task["title"] for task in await listed(client, alice)) == ["a2", "b"]


@pytest.mark.parametrize(
    "values",
    [
        [b""],
        [b"x" * 256],
        [b'"' + b"x" * 256 + b'"'],
        [b'""'],
        ["clé".encode()],
        [b"a\x01b"],
        [b"a\tb"],
        [b'"open'],
        [b"a", b"b"],
    ],
    ids=["empty", "256 chars", "256 chars quoted", "empty quoted", "non-ASCII", "control", "tab", "unclosed", "two"],
)
async def test_a_malformed_key_is_422_and_writes_nothing(
    client: httpx.AsyncClient, alice: Account, values: list[bytes]
) -> None:
    headers = [(b"Authorization", alice.headers["Authorization"].encode()), *((b"Idempotency-Key", v) for v in values)]

    response = await client.post(alice.tasks_url(), json={"title": "never"}, headers=headers)

    assert_names_the_header(response)
    assert await listed(client, alice) == []


async def test_the_quoted_and_the_bare_form_are_the_same_key(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    first = await client.post(alice.tasks_url(), json={"title": "once"}, headers=keyed(alice, '"abc"'))
    retry = await client.post(alice.tasks_url(), json={"title": "once"}, headers=keyed(alice, "abc"))
    escaped = await client.post(alice.tasks_url(), json={"title": "quote"}, headers=keyed(alice, r'" a\"b\\ "'))

    assert first.status_code == retry.status_code == escaped.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert set(await stored_keys(db, alice)) == {"abc", ' a"b\\ '}


async def test_keys_of_255_characters_are_accepted(client: httpx.AsyncClient, db: AsyncEngine, alice: Account) -> None:
    bare, quoted = "b" * 255, '"' + "q" * 255 + '"'
    for key in (bare, quoted):
        response = await client.post(alice.tasks_url(), json={"title": "long key"}, headers=keyed(alice, key))
        assert response.status_code == 201, response.text

    assert set(await stored_keys(db, alice)) == {"b" * 255, "q" * 255}


async def test_keys_belong_to_their_user(client: httpx.AsyncClient, alice: Account, bob: Account) -> None:
    alices = await client.post(alice.tasks_url(), json={"title": "alice's"}, headers=keyed(alice, "shared"))
    bobs = await client.post(bob.tasks_url(), json={"title": "bob's"}, headers=keyed(bob, "shared"))

    assert alices.status_code == bobs.status_code == 201
    assert "Idempotent-Replayed" not in bobs.headers
    assert [task["title"] for task in await listed(client, bob)] == ["bob's"]
    assert [task["title"] for task in await listed(client, alice)] == ["alice's"]


async def test_a_failed_write_stores_no_key_and_its_retry_is_processed_afresh(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    task = await create_task(client, alice)
    missing = alice.tasks_url(uuid.uuid4())
    stale = {**keyed(alice, "stale"), "If-Match": '"99"'}

    for _ in range(2):
        assert_problem(await client.put(missing, json={"title": "x"}, headers=keyed(alice, "missing")), 404)
        conflict = await client.patch(alice.tasks_url(task["id"], "complete"), headers=stale)
        assert_problem(conflict, 412)
        assert "Idempotent-Replayed" not in conflict.headers

    assert await stored_keys(db, alice) == {}


async def test_a_create_refused_by_the_quota_succeeds_when_retried_with_room(
    app_client: AppClient, jwks_server: JWKSServer, alice: Account
) -> None:
    async with app_client(jwks_server, max_tasks_per_user=1) as client:
        first = await create_task(client, alice)
        refused = await client.post(alice.tasks_url(), json={"title": "second"}, headers=keyed(alice, "second"))
        await client.delete(alice.tasks_url(first["id"]), headers=alice.headers)
        retry = await client.post(alice.tasks_url(), json={"title": "second"}, headers=keyed(alice, "second"))

    assert_problem(refused, 409)
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry.headers


async def test_an_expired_key_is_processed_afresh_and_kept_again(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    first = await client.post(alice.tasks_url(), json={"title": "again"}, headers=keyed(alice, "old"))
    await expire(db, alice, "old")

    fresh = await client.post(alice.tasks_url(), json={"title": "again"}, headers=keyed(alice, "old"))
    retry = await client.post(alice.tasks_url(), json={"title": "again"}, headers=keyed(alice, "old"))

    assert fresh.status_code == 201
    assert "Idempotent-Replayed" not in fresh.headers
    assert fresh.json()["id"] != first.json()["id"]
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == fresh.content
    assert len(await listed(client, alice)) == 2


async def test_an_expired_key_may_name_another_request(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    await client.post(alice.tasks_url(), json={"title": "first"}, headers=keyed(alice, "reused"))
    await expire(db, alice, "reused")

    response = await client.post(alice.tasks_url(), json={"title": "other"}, headers=keyed(alice, "reused"))

    assert response.status_code == 201
    assert sorted(task["title"] for task in await listed(client, alice)) == ["first", "other"]


async def test_purging_removes_expired_keys_only(client: httpx.AsyncClient, db: AsyncEngine, alice: Account) -> None:
    for key in ("expired", "live"):
        await client.post(alice.tasks_url(), json={"title": key}, headers=keyed(alice, key))
    await expire(db, alice, "expired")

    async with AsyncSession(db) as session:
        removed = await purge_expired_keys(session, utcnow())

    assert removed >= 1  # other tests' expired keys may go too: the database is shared
    assert set(await stored_keys(db, alice)) == {"live"}


async def test_fifty_concurrent_retries_of_one_create_make_one_task_and_get_one_response(
    app_client: AppClient, jwks_server: JWKSServer, db: AsyncEngine, alice: Account
) -> None:
    # Past the per-user limit of requests at once (else 429s), to have all 50 at the database together.
    async with app_client(jwks_server, max_concurrent_requests_per_user=64) as client:
        await listed(client, alice)  # the user's row, provisioned once
        responses = await asyncio.gather(
            *(client.post(alice.tasks_url(), json={"title": "once"}, headers=keyed(alice, "burst")) for _ in range(50))
        )

    assert [response.status_code for response in responses] == [201] * 50
    assert len({response.content for response in responses}) == 1
    assert sum(response.headers.get("Idempotent-Replayed") == "true" for response in responses) == 49
    async with db.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(Task).where(Task.user_id == alice.id)) == 1


async def test_keyed_writes_of_one_user_with_different_keys_never_deadlock(
    app_client: AppClient, jwks_server: JWKSServer, alice: Account
) -> None:
    """Each keyed write locks the owner's row before inserting its key (which share-locks that row): with the
    key first, two of them would each hold a share lock the other's update lock waits for (a deadlock)."""
    async with app_client(jwks_server, max_concurrent_requests_per_user=64) as client:
        tasks = [await create_task(client, alice) for _ in range(6)]
        responses = await asyncio.gather(
            *(
                client.patch(alice.tasks_url(t["id"], "complete"), headers=keyed(alice, f"t{n}"))
                for n, t in enumerate(tasks)
            ),
            *(
                client.post(alice.tasks_url(), json={"title": f"new {n}"}, headers=keyed(alice, f"c{n}"))
                for n in range(6)
            ),
            client.patch(alice.tasks_url(), json={"completed": True}, headers=keyed(alice, "all")),
        )

    assert [response.status_code for response in responses] == [200] * 6 + [201] * 6 + [200]


async def test_a_retry_while_the_first_request_holds_the_key_is_409(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    await listed(client, alice)  # the user's row, provisioned before the key is held
    now = utcnow()
    held = {"fingerprint": "0" * 64, "status_code": 0, "headers": {}, "body": b"", "created_at": now}
    async with db.connect() as first_request:
        # A request in flight: its key inserted, its transaction open (PostgreSQL holds row locks, SQLite the file).
        await first_request.execute(
            insert(IdempotencyKey).values(user_id=alice.id, key="held", expires_at=now + timedelta(hours=1), **held)
        )
        retry = await client.post(alice.tasks_url(), json={"title": "once"}, headers=keyed(alice, "held"))
        await first_request.rollback()
    after = await client.post(alice.tasks_url(), json={"title": "once"}, headers=keyed(alice, "held"))

    assert "still being processed" in assert_problem(retry, 409)["detail"]
    assert retry.headers["retry-after"] == "1"
    assert after.status_code == 201  # the first rolled back: the key was never taken


async def test_a_keyed_create_provisions_a_user_row_deleted_behind_the_services_back(
    client: httpx.AsyncClient, db: AsyncEngine, alice: Account
) -> None:
    await listed(client, alice)
    async with db.begin() as connection:
        await connection.execute(delete(User).where(User.id == alice.id))

    first = await client.post(alice.tasks_url(), json={"title": "after"}, headers=keyed(alice, "after"))
    retry = await client.post(alice.tasks_url(), json={"title": "after"}, headers=keyed(alice, "after"))

    assert first.status_code == retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"


def test_every_write_documents_the_key_and_the_replay(tmp_path: Path) -> None:
    operations = {
        operation["operationId"]: operation
        for path_item in served_openapi_document(tmp_path)["paths"].values()
        for operation in path_item.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    writes = {
        "CreateTask",
        "UpdateTask",
        "DeleteTask",
        "ToggleTaskCompletion",
        "SetAllTasksCompleted",
        "DeleteCompletedTasks",
        "MoveTask",
    }

    for operation_id, operation in operations.items():
        headers = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}
        assert ("Idempotency-Key" in headers) == (operation_id in writes), operation_id
        if operation_id in writes:
            assert headers["Idempotency-Key"]["required"] is False
            success = next(response for status, response in operation["responses"].items() if status < "300")
            assert success["headers"]["Idempotent-Replayed"]["schema"] == {"type": "string", "enum": ["true"]}
            assert {"409", "422"} <= set(operation["responses"]), operation_id


async def test_a_retry_after_the_service_died_between_commit_and_response_gets_the_stored_response(
    postgres_database_url: str, jwks_server: JWKSServer, alice: Account
) -> None:
    await asyncio.to_thread(upgrade_schema, Settings(database_url=postgres_database_url))
    environment = service_environment(postgres_database_url, jwks_server)
    engine = create_engine(Settings(database_url=postgres_database_url), pooled=False)
    body, headers = {"title": "exactly once"}, keyed(alice, "lost-response")
    server = await asyncio.to_thread(ApiServer(env=environment).start)
    try:
        async with response_withholding_proxy(server.port) as proxy, httpx.AsyncClient(base_url=proxy) as lossy:
            lost = asyncio.create_task(lossy.post(alice.tasks_url(), json=body, headers=headers, timeout=30))

            async def key_committed() -> bool:
                return "lost-response" in await stored_keys(engine, alice)

            await until(key_committed, "the write and its key were not committed")
            assert server.process is not None
            server.process.kill()  # SIGKILL: no shutdown, no response
            await asyncio.to_thread(server.process.wait)
            with pytest.raises(httpx.TransportError):
                await lost
        server = await asyncio.to_thread(ApiServer(env=environment).start)
        async with httpx.AsyncClient(base_url=server.url) as fresh:
            retry = await fresh.post(alice.tasks_url(), json=body, headers=headers)
        async with engine.connect() as connection:
            stored = await connection.scalar(select(IdempotencyKey.body).where(IdempotencyKey.user_id == alice.id))
            tasks = (await connection.execute(select(Task.id).where(Task.user_id == alice.id))).scalars().all()
    finally:
        server.stop()
        await engine.dispose()

    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == stored
    assert [str(task_id) for task_id in tasks] == [retry.json()["id"]]
