"""Tokens issued by a real Better Auth server (npm ``better-auth``, JWT plugin) against the real service."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import select

from app.config import Settings
from app.db import create_engine
from app.main import create_app
from app.models import User
from tests.support.better_auth import BetterAuth, RealUser
from tests.support.databases import stored_for
from tests.support.environment import service_settings
from tests.support.servers import free_port

BETTER_AUTH_ID = re.compile(r"^[A-Za-z0-9]{32}$")


def b64json(segment: str) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def with_kid(token: str, kid: str) -> str:
    """The same token under another ``kid`` (the kid is looked up before the signature is checked)."""
    header, payload, signature = token.split(".")
    new_header = {**b64json(header), "kid": kid}
    encoded = base64.urlsafe_b64encode(json.dumps(new_header).encode()).rstrip(b"=").decode()
    return f"{encoded}.{payload}.{signature}"


@pytest.fixture
def app_trusting(interop_database_url: str) -> Callable[..., AbstractContextManager[TestClient[Any]]]:
    """The service in process, configured like production with only BETTER_AUTH_URL, for a given issuer."""

    @contextmanager
    def start(issuer: BetterAuth, **overrides: object) -> Iterator[TestClient[Any]]:
        settings = service_settings(interop_database_url, **issuer.as_sole_issuer(), **overrides)
        with TestClient(app=create_app(settings)) as client:
            yield client

    return start


def exercise_every_route(client: httpx.Client | TestClient[Any], user: RealUser) -> None:
    created = client.post(user.tasks_url(), json={"title": "Real token"}, headers=user.headers)
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["user_id"] == user.id
    assert created.headers["location"] == user.tasks_url(task["id"])

    listed = client.get(user.tasks_url(), headers=user.headers)
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json()] == [task["id"]]
    assert listed.headers["x-total-count"] == "1"

    assert client.get(user.tasks_url(task["id"]), headers=user.headers).json() == task
    updated = client.put(user.tasks_url(task["id"]), json={"description": "edited"}, headers=user.headers)
    assert updated.status_code == 200
    assert updated.json()["description"] == "edited"
    toggled = client.patch(user.tasks_url(task["id"], "complete"), headers=user.headers)
    assert toggled.status_code == 200
    assert toggled.json()["completed"] is True
    assert client.delete(user.tasks_url(task["id"]), headers=user.headers).status_code == 204
    assert client.get(user.tasks_url(task["id"]), headers=user.headers).status_code == 404


def test_every_route_works_for_a_real_better_auth_user(better_auth: BetterAuth, api: httpx.Client) -> None:
    user = better_auth.sign_up()

    assert BETTER_AUTH_ID.match(user.id), user.id
    header = b64json(user.token.split(".")[0])
    assert header["alg"] == "EdDSA"
    exercise_every_route(api, user)


def test_the_set_auth_jwt_header_of_get_session_is_accepted(better_auth: BetterAuth, api: httpx.Client) -> None:
    user = better_auth.sign_up()
    user.token = better_auth.session_jwt(user)

    response = api.get(user.tasks_url(), headers=user.headers)

    assert response.status_code == 200, response.text


def test_two_real_users_are_isolated(better_auth: BetterAuth, api: httpx.Client) -> None:
    alice, bob = better_auth.sign_up(name="Alice"), better_auth.sign_up(name="Bob")
    task = api.post(alice.tasks_url(), json={"title": "alice's"}, headers=alice.headers).json()

    assert api.get(alice.tasks_url(), headers=bob.headers).status_code == 403
    assert api.get(bob.tasks_url(task["id"]), headers=bob.headers).status_code == 404
    assert api.delete(bob.tasks_url(task["id"]), headers=bob.headers).status_code == 404
    assert api.get(bob.tasks_url(), headers=bob.headers).json() == []
    assert api.get(alice.tasks_url(task["id"]), headers=alice.headers).json() == task


def test_the_provisioned_user_has_better_auths_email_and_name(
    better_auth: BetterAuth, api: httpx.Client, interop_database_url: str
) -> None:
    user = better_auth.sign_up(email=f"ada-{secrets.token_hex(4)}@interop.example", name="Ada Lovelace")
    api.get(user.tasks_url(), headers=user.headers)

    async def row() -> Any:
        engine = create_engine(Settings(database_url=interop_database_url), pooled=False)
        try:
            async with engine.connect() as connection:
                return (await connection.execute(select(User.email, User.name).where(User.id == user.id))).one()
        finally:
            await engine.dispose()

    assert tuple(asyncio.run(row())) == (user.email, "Ada Lovelace")


def test_uuid_user_ids_from_better_auth_work(
    start_better_auth: Callable[..., BetterAuth], app_trusting: Callable[..., Any]
) -> None:
    issuer = start_better_auth(ID_FORMAT="uuid")
    user = issuer.sign_up()

    assert uuid.UUID(user.id)
    with app_trusting(issuer) as client:
        exercise_every_route(client, user)


@pytest.mark.parametrize("algorithm", ["RS256", "PS256", "ES256", "ES512"])
def test_tokens_from_issuers_with_other_algorithms_work(
    start_better_auth: Callable[..., BetterAuth], app_trusting: Callable[..., Any], algorithm: str
) -> None:
    issuer = start_better_auth(JWT_ALG=algorithm)
    user = issuer.sign_up()

    assert b64json(user.token.split(".")[0])["alg"] == algorithm
    with app_trusting(issuer) as client:
        exercise_every_route(client, user)


def assert_refused(response: Any, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert f'error_description="{reason}"' in response.headers["www-authenticate"]


def test_an_expired_real_token_is_refused(
    start_better_auth: Callable[..., BetterAuth], app_trusting: Callable[..., Any]
) -> None:
    issuer = start_better_auth(JWT_EXPIRATION="-1h")
    user = issuer.sign_up()

    with app_trusting(issuer) as client:
        assert_refused(client.get(user.tasks_url(), headers=user.headers), "token expired")


def test_a_real_token_for_another_audience_is_refused(
    start_better_auth: Callable[..., BetterAuth], app_trusting: Callable[..., Any]
) -> None:
    issuer = start_better_auth(JWT_AUDIENCE="https://another-api.example")
    user = issuer.sign_up()

    with app_trusting(issuer) as client:
        assert_refused(client.get(user.tasks_url(), headers=user.headers), "invalid audience")


def test_a_real_token_signed_by_a_key_outside_the_jwks_is_refused(
    better_auth: BetterAuth, start_better_auth: Callable[..., BetterAuth], api: httpx.Client
) -> None:
    # Same base URL, so the same iss and aud, but its own keys: an impostor the JWKS does not vouch for.
    impostor = start_better_auth(BETTER_AUTH_URL=better_auth.url)
    user = impostor.sign_up()
    published_kid = better_auth.jwks()["keys"][0]["kid"]

    assert_refused(api.get(user.tasks_url(), headers=user.headers), "unknown signing key")
    forged = with_kid(user.token, published_kid)
    assert_refused(api.get(user.tasks_url(), headers={"Authorization": f"Bearer {forged}"}), "invalid signature")


def test_a_rotated_key_is_accepted_without_restarting_the_service(
    start_better_auth: Callable[..., BetterAuth], app_trusting: Callable[..., Any]
) -> None:
    issuer = start_better_auth()
    before = issuer.sign_up()
    # No refresh interval: the first token under the new kid may fetch at once (the interval is tested in test_jwks).
    with app_trusting(issuer, jwt_jwks_min_refresh_interval_seconds=0) as client:
        assert client.get(before.tasks_url(), headers=before.headers).status_code == 200
        old_kid = issuer.jwks()["keys"][0]["kid"]
        issuer.restart()  # a fresh key, and so a new kid; the fetch counter restarts with it
        after = issuer.sign_up()
        assert issuer.jwks()["keys"][0]["kid"] != old_kid

        response = client.get(after.tasks_url(), headers=after.headers)

    assert response.status_code == 200, response.text
    # One is this test's own issuer.jwks() after the restart; the other the service's, for the new kid.
    assert issuer.jwks_fetches() == 2


def test_a_flood_of_unknown_kids_fetches_the_jwks_at_most_once_an_interval(
    better_auth: BetterAuth, app_trusting: Callable[..., Any]
) -> None:
    user = better_auth.sign_up()
    # An interval far longer than the flood takes, so the bound does not depend on how fast this machine is.
    with app_trusting(better_auth, jwt_jwks_min_refresh_interval_seconds=60) as client:
        assert client.get(user.tasks_url(), headers=user.headers).status_code == 200  # the keys are loaded
        before = better_auth.jwks_fetches()
        statuses = {
            client.get(
                user.tasks_url(), headers={"Authorization": f"Bearer {with_kid(user.token, secrets.token_hex(8))}"}
            ).status_code
            for _ in range(300)
        }
        fetches = better_auth.jwks_fetches() - before
        still_valid = client.get(user.tasks_url(), headers=user.headers).status_code

    assert statuses == {401}
    assert fetches <= 1
    assert still_valid == 200


def test_cached_keys_keep_working_while_better_auth_is_down(
    start_better_auth: Callable[..., BetterAuth], app_trusting: Callable[..., Any]
) -> None:
    issuer = start_better_auth()
    user = issuer.sign_up()
    with app_trusting(issuer) as client:
        assert client.get(user.tasks_url(), headers=user.headers).status_code == 200
        issuer.stop()

        cached = [client.get(user.tasks_url(), headers=user.headers).status_code for _ in range(3)]
        created = client.post(user.tasks_url(), json={"title": "during the outage"}, headers=user.headers)
        unknown = client.get(user.tasks_url(), headers={"Authorization": f"Bearer {with_kid(user.token, 'gone')}"})

    assert cached == [200, 200, 200]
    assert created.status_code == 201
    assert unknown.status_code == 401


# --- deleting the account in Better Auth -----------------------------------------------------------------


def delete_account(better_auth: BetterAuth, user: RealUser) -> httpx.Response:
    """``authClient.deleteUser()``: a fresh session needs no password."""
    return httpx.post(
        f"{better_auth.origin}/api/auth/delete-user",
        json={},
        headers={"Cookie": user.cookie, "Origin": better_auth.url},
        timeout=30,
    )


def test_deleting_the_account_in_better_auth_erases_its_tasks_here(
    better_auth: BetterAuth, api: httpx.Client, interop_database_url: str
) -> None:
    user, other = better_auth.sign_up(), better_auth.sign_up()
    for title in ("buy milk", "call mum", "file taxes"):
        headers = {**user.headers, "Idempotency-Key": f"create-{title}"}
        assert api.post(user.tasks_url(), json={"title": title}, headers=headers).status_code == 201
    deleted_id = api.get(user.tasks_url(), headers=user.headers).json()[0]["id"]
    assert api.delete(user.tasks_url(deleted_id), headers=user.headers).status_code == 204  # leaves a tombstone
    assert api.post(other.tasks_url(), json={"title": "not mine"}, headers=other.headers).status_code == 201
    assert stored_for(interop_database_url, user.id) == {
        "users": 1,
        "tasks": 2,
        "task_tombstones": 1,
        "idempotency_keys": 3,
    }

    response = delete_account(better_auth, user)

    assert response.status_code == 200, response.text
    assert stored_for(interop_database_url, user.id) == dict.fromkeys(
        ["users", "tasks", "task_tombstones", "idempotency_keys"], 0
    )
    assert [task["title"] for task in api.get(other.tasks_url(), headers=other.headers).json()] == ["not mine"]
    session = httpx.get(f"{better_auth.origin}/api/auth/get-session", headers={"Cookie": user.cookie})
    assert session.json() is None  # and gone from Better Auth


def test_an_account_the_api_could_not_erase_is_not_deleted_in_better_auth(
    start_better_auth: Callable[..., BetterAuth],
) -> None:
    # A Better Auth whose Todo API is unreachable: nothing listens on the port it is given.
    better_auth = start_better_auth(TODO_API_URL=f"http://127.0.0.1:{free_port()}")
    user = better_auth.sign_up()

    response = delete_account(better_auth, user)

    assert response.status_code == 502, response.text
    session = httpx.get(f"{better_auth.origin}/api/auth/get-session", headers={"Cookie": user.cookie})
    assert session.json()["user"]["id"] == user.id  # still there: the user can try again
