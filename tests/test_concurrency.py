"""No lost updates: ETags on every task, If-Match / If-None-Match, and real concurrent writers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support.factories import Account, create_task

CONCURRENCY = 12


async def fetch(client: httpx.AsyncClient, account: Account, task_id: str) -> Any:
    response = await client.get(account.tasks_url(task_id), headers=account.headers)
    assert response.status_code == 200
    return response


async def test_every_single_task_response_carries_an_etag_that_changes_with_each_write(
    client: httpx.AsyncClient, alice: Account
) -> None:
    created = await client.post(alice.tasks_url(), json={"title": "versioned"}, headers=alice.headers)
    task_id = created.json()["id"]
    url = alice.tasks_url(task_id)

    tags = [created.headers["etag"]]
    tags.append((await client.put(url, json={"title": "v2"}, headers=alice.headers)).headers["etag"])
    tags.append((await client.patch(f"{url}/complete", headers=alice.headers)).headers["etag"])
    current = (await fetch(client, alice, task_id)).headers["etag"]

    assert len(set(tags)) == 3
    assert current == tags[-1]
    assert all(tag.startswith('"') and tag.endswith('"') for tag in tags)


async def test_an_update_without_changes_keeps_the_etag(client: httpx.AsyncClient, alice: Account) -> None:
    created = await client.post(alice.tasks_url(), json={"title": "still"}, headers=alice.headers)

    response = await client.put(alice.tasks_url(created.json()["id"]), json={}, headers=alice.headers)

    assert response.headers["etag"] == created.headers["etag"]


#: Every conditional write: method, path suffix, body.
WRITES = [("PUT", "", {"title": "overwritten"}), ("PATCH", "/complete", None), ("DELETE", "", None)]


@pytest.mark.parametrize(("method", "suffix", "body"), WRITES)
async def test_a_stale_if_match_is_412_and_changes_nothing(
    client: httpx.AsyncClient, alice: Account, method: str, suffix: str, body: Any
) -> None:
    task = await create_task(client, alice, title="original", completed=False)
    stale = (await fetch(client, alice, task["id"])).headers["etag"]
    changed = await client.put(alice.tasks_url(task["id"]), json={"title": "someone else"}, headers=alice.headers)

    response = await client.request(
        method, alice.tasks_url(task["id"]) + suffix, json=body, headers={**alice.headers, "If-Match": stale}
    )

    assert response.status_code == 412
    assert response.headers["content-type"].startswith("application/problem+json")
    after = await fetch(client, alice, task["id"])
    assert after.json() == changed.json()
    assert after.headers["etag"] == changed.headers["etag"]


@pytest.mark.parametrize(
    ("method", "suffix", "body", "status"),
    [("PUT", "", {"title": "mine"}, 200), ("PATCH", "/complete", None, 200), ("DELETE", "", None, 204)],
)
async def test_the_current_if_match_succeeds(
    client: httpx.AsyncClient, alice: Account, method: str, suffix: str, body: Any, status: int
) -> None:
    task = await create_task(client, alice)
    current = (await fetch(client, alice, task["id"])).headers["etag"]

    response = await client.request(
        method, alice.tasks_url(task["id"]) + suffix, json=body, headers={**alice.headers, "If-Match": current}
    )

    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("if_match", "status"),
    [
        ("*", 200),
        ('"999", {current}', 200),  # a list naming the current tag
        ("W/{current}", 412),  # If-Match compares strongly: a weak tag never matches
        ('"not-a-version"', 412),
        ("garbage without quotes", 412),
        ('""', 412),
        ('"01"', 412),  # strong comparison is by characters: "01" is not "1"
        ('"1 "', 412),
        ('"+1"', 412),
        ('"\u00b2"', 412),  # a Unicode digit (superscript two): str.isdigit() says yes, int() says no
        ('"\u0661"', 412),  # ARABIC-INDIC DIGIT ONE
        ('"99999999999999999999999999"', 412),
    ],
)
@pytest.mark.parametrize(("method", "suffix", "body"), WRITES)
async def test_if_match_forms(
    client: httpx.AsyncClient, alice: Account, if_match: str, status: int, method: str, suffix: str, body: Any
) -> None:
    task = await create_task(client, alice)
    current = (await fetch(client, alice, task["id"])).headers["etag"]
    # UTF-8 on the wire, as a client may send it; the server reads header bytes as Latin-1.
    headers = {**alice.headers, "If-Match": if_match.format(current=current).encode()}

    response = await client.request(method, alice.tasks_url(task["id"]) + suffix, json=body, headers=headers)

    assert response.status_code == (204 if method == "DELETE" and status == 200 else status), response.text


async def test_if_none_match_compares_the_exact_spelling(client: httpx.AsyncClient, alice: Account) -> None:
    task = await create_task(client, alice)

    response = await client.get(alice.tasks_url(task["id"]), headers={**alice.headers, "If-None-Match": '"01"'})

    assert response.status_code == 200


async def test_without_if_match_the_last_write_wins(client: httpx.AsyncClient, alice: Account) -> None:
    task = await create_task(client, alice)

    await client.put(alice.tasks_url(task["id"]), json={"title": "first"}, headers=alice.headers)
    second = await client.put(alice.tasks_url(task["id"]), json={"title": "second"}, headers=alice.headers)

    assert second.status_code == 200
    assert (await fetch(client, alice, task["id"])).json()["title"] == "second"


async def test_if_match_on_a_missing_task_is_404_not_412(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.put(
        alice.tasks_url("3d6f0a3c-1b2a-4c5d-8e9f-0a1b2c3d4e5f"),
        json={"title": "x"},
        headers={**alice.headers, "If-Match": '"1"'},
    )

    assert response.status_code == 404


@pytest.mark.parametrize("tag", ["{current}", "W/{current}", "*", '"1", {current}'])
async def test_if_none_match_with_the_current_etag_is_304(client: httpx.AsyncClient, alice: Account, tag: str) -> None:
    task = await create_task(client, alice)
    await client.patch(alice.tasks_url(task["id"], "complete"), headers=alice.headers)
    current = (await fetch(client, alice, task["id"])).headers["etag"]

    response = await client.get(
        alice.tasks_url(task["id"]), headers={**alice.headers, "If-None-Match": tag.format(current=current)}
    )

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == current


async def test_if_none_match_with_an_old_etag_returns_the_task(client: httpx.AsyncClient, alice: Account) -> None:
    created = await client.post(alice.tasks_url(), json={"title": "fresh"}, headers=alice.headers)
    await client.patch(alice.tasks_url(created.json()["id"], "complete"), headers=alice.headers)

    response = await client.get(
        alice.tasks_url(created.json()["id"]), headers={**alice.headers, "If-None-Match": created.headers["etag"]}
    )

    assert response.status_code == 200
    assert response.json()["completed"] is True


async def test_a_version_in_the_body_is_ignored(client: httpx.AsyncClient, alice: Account) -> None:
    created = await client.post(alice.tasks_url(), json={"title": "v", "version": 99}, headers=alice.headers)
    updated = await client.put(
        alice.tasks_url(created.json()["id"]), json={"title": "w", "version": 1000}, headers=alice.headers
    )

    assert created.headers["etag"] == '"1"'
    assert updated.headers["etag"] == '"2"'


async def test_concurrent_toggles_each_flip_the_task_once(client: httpx.AsyncClient, alice: Account) -> None:
    task = await create_task(client, alice, completed=False)

    responses = await asyncio.gather(
        *(client.patch(alice.tasks_url(task["id"], "complete"), headers=alice.headers) for _ in range(CONCURRENCY))
    )

    assert [r.status_code for r in responses] == [200] * CONCURRENCY
    final = await fetch(client, alice, task["id"])
    assert final.json()["completed"] is (CONCURRENCY % 2 == 1)
    assert final.headers["etag"] == f'"{1 + CONCURRENCY}"'
    # Every toggle saw a different version: no two read the same old value.
    assert len({r.headers["etag"] for r in responses}) == CONCURRENCY


async def test_concurrent_creates_create_exactly_that_many_tasks(client: httpx.AsyncClient, alice: Account) -> None:
    responses = await asyncio.gather(
        *(client.post(alice.tasks_url(), json={"title": f"c{n}"}, headers=alice.headers) for n in range(CONCURRENCY))
    )

    assert [r.status_code for r in responses] == [201] * CONCURRENCY
    listed = await client.get(alice.tasks_url(), headers=alice.headers)
    assert listed.headers["x-total-count"] == str(CONCURRENCY)
    assert {t["title"] for t in listed.json()} == {f"c{n}" for n in range(CONCURRENCY)}


async def test_concurrent_updates_with_the_same_if_match_let_exactly_one_win(
    client: httpx.AsyncClient, alice: Account
) -> None:
    task = await create_task(client, alice, title="contested")
    etag = (await fetch(client, alice, task["id"])).headers["etag"]

    responses = await asyncio.gather(
        *(
            client.put(
                alice.tasks_url(task["id"]), json={"title": f"writer {n}"}, headers={**alice.headers, "If-Match": etag}
            )
            for n in range(CONCURRENCY)
        )
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * (CONCURRENCY - 1)
    winner = next(r for r in responses if r.status_code == 200)
    assert (await fetch(client, alice, task["id"])).json()["title"] == winner.json()["title"]
