"""Bad input: every validation failure is a 422 problem-details response naming the field, and changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.factories import Account, create_task

NUL = "\x00"


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status`` and, for 422, an error naming ``field``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"] == "about:blank"
    assert problem["title"]
    assert problem["detail"]
    if field is not None:
        assert field in [error["field"] for error in problem["errors"]], problem
        assert all(error["message"] for error in problem["errors"])
    return problem


async def list_all(client: httpx.AsyncClient, account: Account) -> list[dict[str, Any]]:
    return (await client.get(account.tasks_url(), headers=account.headers)).json()


INVALID_BODIES: list[tuple[str, Any, str]] = [
    ("missing title", {"description": "no title"}, "title"),
    ("null title", {"title": None}, "title"),
    ("empty title", {"title": ""}, "title"),
    ("whitespace-only title", {"title": " \t\n "}, "title"),
    ("Unicode-space-only title", {"title": "\u00a0\u2003\u3000"}, "title"),
    ("title of 201 characters", {"title": "x" * 201}, "title"),
    ("title of 10 000 characters", {"title": "x" * 10_000}, "title"),
    ("number as title", {"title": 123}, "title"),
    ("NUL in title", {"title": f"a{NUL}b"}, "title"),
    ("description of 1001 characters", {"title": "ok", "description": "d" * 1001}, "description"),
    ("NUL in description", {"title": "ok", "description": f"a{NUL}b"}, "description"),
    ("number as description", {"title": "ok", "description": 5}, "description"),
    ("string as completed", {"title": "ok", "completed": "yes"}, "completed"),
    ("string 'true' as completed", {"title": "ok", "completed": "true"}, "completed"),
    ("number as completed", {"title": "ok", "completed": 1}, "completed"),
    ("array as body", [{"title": "ok"}], "body"),
    ("string as body", "title", "body"),
    ("null as body", None, "body"),
]


@pytest.mark.parametrize(("case", "body", "field"), INVALID_BODIES, ids=[c[0] for c in INVALID_BODIES])
async def test_invalid_create_body_is_422_and_creates_nothing(
    client: httpx.AsyncClient, alice: Account, case: str, body: Any, field: str
) -> None:
    response = await client.post(alice.tasks_url(), json=body, headers=alice.headers)

    assert_problem(response, 422, field)
    assert await list_all(client, alice) == []


@pytest.mark.parametrize(
    ("case", "raw"),
    [
        ("malformed JSON", b'{"title": "unterminated'),
        ("trailing garbage", b'{"title": "ok"} trailing'),
        ("invalid UTF-8", b'{"title": "\xff\xfe"}'),
        ("empty body", b""),
    ],
)
async def test_unparseable_create_body_is_422(client: httpx.AsyncClient, alice: Account, case: str, raw: bytes) -> None:
    response = await client.post(
        alice.tasks_url(), content=raw, headers={**alice.headers, "Content-Type": "application/json"}
    )

    assert_problem(response, 422, "body")
    assert await list_all(client, alice) == []


INVALID_UPDATES: list[tuple[str, Any, str]] = [
    ("null title", {"title": None}, "title"),
    ("empty title", {"title": ""}, "title"),
    ("whitespace-only title", {"title": "   "}, "title"),
    ("title of 201 characters", {"title": "x" * 201}, "title"),
    ("NUL in title", {"title": NUL}, "title"),
    ("description of 1001 characters", {"description": "d" * 1001}, "description"),
    ("NUL in description", {"description": NUL}, "description"),
    ("null completed", {"completed": None}, "completed"),
    ("string as completed", {"completed": "yes"}, "completed"),
    ("array as body", [], "body"),
]


@pytest.mark.parametrize(("case", "body", "field"), INVALID_UPDATES, ids=[c[0] for c in INVALID_UPDATES])
async def test_invalid_update_is_422_and_changes_nothing(
    client: httpx.AsyncClient, alice: Account, case: str, body: Any, field: str
) -> None:
    task = await create_task(client, alice, title="Untouched", description="Same", completed=False)

    response = await client.put(alice.tasks_url(task["id"]), json=body, headers=alice.headers)

    assert_problem(response, 422, field)
    assert (await client.get(alice.tasks_url(task["id"]), headers=alice.headers)).json() == task


async def test_update_with_one_bad_field_applies_none_of_the_others(client: httpx.AsyncClient, alice: Account) -> None:
    task = await create_task(client, alice, title="Before", completed=False)

    response = await client.put(
        alice.tasks_url(task["id"]), json={"title": "After", "completed": "nope"}, headers=alice.headers
    )

    assert_problem(response, 422, "completed")
    assert (await client.get(alice.tasks_url(task["id"]), headers=alice.headers)).json() == task


@pytest.mark.parametrize(
    "task_id", ["not-a-uuid", "123", "6f1c2a9e-0b7d-4c43-9a55-2f0d3c1e8b7", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"]
)
async def test_malformed_task_id_is_422_on_every_task_route(
    client: httpx.AsyncClient, alice: Account, task_id: str
) -> None:
    url = alice.tasks_url(task_id)

    for response in [
        await client.get(url, headers=alice.headers),
        await client.put(url, json={"title": "x"}, headers=alice.headers),
        await client.delete(url, headers=alice.headers),
        await client.patch(f"{url}/complete", headers=alice.headers),
    ]:
        problem = assert_problem(response, 422, "task_id")
        assert problem["errors"][0]["source"] == "path"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-5", "limit"),
        ("limit=ten", "limit"),
        ("limit=1.5", "limit"),
        ("offset=-1", "offset"),
        ("offset=abc", "offset"),
        ("sort=importance", "sort"),
        ("sort=created_at%3Bdrop", "sort"),
        ("sort=", "sort"),
        ("completed=maybe", "completed"),
        ("q=" + "x" * 201, "q"),
        ("q=a%00b", "q"),
    ],
)
async def test_invalid_list_query_is_422(client: httpx.AsyncClient, alice: Account, query: str, field: str) -> None:
    response = await client.get(f"{alice.tasks_url()}?{query}", headers=alice.headers)

    problem = assert_problem(response, 422, field)
    assert problem["errors"][0]["source"] == "query"


async def test_all_invalid_query_parameters_are_reported_together(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.get(f"{alice.tasks_url()}?limit=0&offset=-1&sort=nope", headers=alice.headers)

    problem = assert_problem(response, 422)
    assert {error["field"] for error in problem["errors"]} == {"limit", "offset", "sort"}


async def test_error_messages_are_readable(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.post(alice.tasks_url(), json={"title": "   "}, headers=alice.headers)

    message = assert_problem(response, 422, "title")["errors"][0]["message"]
    assert "regex" not in message
    assert "whitespace" in message


async def test_unknown_route_is_a_problem_document(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api"), 404)
    assert_problem(await client.get("/definitely/not/here"), 404)


async def test_unsupported_method_is_a_problem_document(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.post("/health", headers=alice.headers)

    assert_problem(response, 405)


async def test_a_body_over_64_kib_is_413_and_creates_nothing(client: httpx.AsyncClient, alice: Account) -> None:
    oversized = b'{"title": "big", "description": "' + b"x" * (64 * 1024) + b'"}'

    response = await client.post(
        alice.tasks_url(), content=oversized, headers={**alice.headers, "Content-Type": "application/json"}
    )

    assert_problem(response, 413)
    assert await list_all(client, alice) == []


@pytest.mark.parametrize(
    ("case", "raw"),
    [
        ("deeply nested JSON", b'{"title": "x", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("duplicate keys", b'{"title": "first", "title": "second"}'),
        ("duplicate keys in a nested object", b'{"title": "x", "extra": {"a": 1, "a": 2}}'),
        ("lone surrogate escape", b'{"title": "\\ud800"}'),
        ("a bare number", b"42"),
        ("an empty object", b"{}"),
    ],
)
async def test_hostile_bodies_are_refused_and_change_nothing(
    client: httpx.AsyncClient, alice: Account, case: str, raw: bytes
) -> None:
    response = await client.post(
        alice.tasks_url(), content=raw, headers={**alice.headers, "Content-Type": "application/json"}
    )

    assert 400 <= response.status_code < 500, (case, response.status_code)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await list_all(client, alice) == []


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/json"]
)
async def test_a_body_that_is_not_declared_json_is_415(
    client: httpx.AsyncClient, alice: Account, content_type: str
) -> None:
    response = await client.post(
        alice.tasks_url(),
        content=b'{"title": "looks like json"}',
        headers={**alice.headers, "Content-Type": content_type},
    )

    assert_problem(response, 415)
    assert await list_all(client, alice) == []


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/merge-patch+json"])
async def test_json_media_types_are_accepted(client: httpx.AsyncClient, alice: Account, content_type: str) -> None:
    response = await client.post(
        alice.tasks_url(), content=b'{"title": "json"}', headers={**alice.headers, "Content-Type": content_type}
    )

    assert response.status_code == 201


async def test_a_10_mib_body_is_413_and_the_service_stays_healthy(client: httpx.AsyncClient, alice: Account) -> None:
    huge = b'{"title": "big", "description": "' + b"x" * (10 * 1024 * 1024) + b'"}'

    response = await client.post(
        alice.tasks_url(), content=huge, headers={**alice.headers, "Content-Type": "application/json"}
    )

    assert_problem(response, 413)
    assert await list_all(client, alice) == []
    assert (await client.get("/health")).status_code == 200


async def test_a_streamed_body_is_cut_off_at_the_limit_not_read_whole(
    client: httpx.AsyncClient, alice: Account
) -> None:
    sent = 0

    async def stream() -> Any:
        nonlocal sent
        yield b'{"title": "big", "description": "'
        for _ in range(10 * 1024):  # up to 10 MiB, chunked: no Content-Length to refuse it by
            sent += 1024
            yield b"x" * 1024
        yield b'"}'

    response = await client.post(
        alice.tasks_url(), content=stream(), headers={**alice.headers, "Content-Type": "application/json"}
    )

    assert_problem(response, 413)
    assert await list_all(client, alice) == []
    assert sent <= 128 * 1024  # it stopped pulling the body once past 64 KiB


async def test_an_offset_beyond_any_list_is_422_not_a_database_error(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.get(f"{alice.tasks_url()}?offset=68905687175100511551488", headers=alice.headers)

    assert_problem(response, 422, "offset")


async def test_options_requests_are_answered_not_failed(client: httpx.AsyncClient, alice: Account) -> None:
    expected = {
        alice.tasks_url(): "DELETE, GET, HEAD, OPTIONS, PATCH, POST",
        alice.tasks_url("changes"): "GET, HEAD, OPTIONS",
        alice.tasks_url("e3e70682-c209-1cac-a29f-6fbed82c07cd"): "DELETE, GET, HEAD, OPTIONS, PUT",
        alice.tasks_url("e3e70682-c209-1cac-a29f-6fbed82c07cd", "complete"): "OPTIONS, PATCH",
    }
    for url, allow in expected.items():
        response = await client.options(url, headers=alice.headers)
        assert response.status_code == 204
        assert response.headers["allow"] == allow
