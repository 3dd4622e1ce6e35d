"""Authentication: which tokens are accepted, and a 401 with ``WWW-Authenticate`` for every way one is not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.factories import Account, new_user_id
from tests.support.issuer import HS_SECRET, ISSUER, JWKSServer, SigningKey, mint
from tests.support.tokens import REJECTED_TOKENS


@pytest.mark.parametrize("case", list(REJECTED_TOKENS))
async def test_invalid_token_is_401_invalid_token(
    client: httpx.AsyncClient, signing_keys: dict[str, SigningKey], case: str
) -> None:
    user_id = new_user_id()
    build, reason = REJECTED_TOKENS[case]
    token = build(user_id, signing_keys)

    # Raw bytes: a client may send anything, including non-ASCII, in a header.
    response = await client.get(f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer {token}".encode()})

    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert f'error_description="{reason}"' in challenge
    assert token not in response.text


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNzd29yZA==", "Token abc.def.ghi", "bearer-token abc"],
)
async def test_request_without_a_bearer_token_is_401_with_a_plain_challenge(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    response = await client.get(f"/api/{new_user_id()}/tasks", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="todo-api"'
    assert response.json()["status"] == 401


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
async def test_every_task_route_requires_a_token(client: httpx.AsyncClient, method: str) -> None:
    user_id = new_user_id()
    url = {
        "GET": f"/api/{user_id}/tasks",
        "POST": f"/api/{user_id}/tasks",
        "PUT": f"/api/{user_id}/tasks/0b0e6b1c-2f0a-4b7e-8d8e-3a7c2c9a1f00",
        "DELETE": f"/api/{user_id}/tasks/0b0e6b1c-2f0a-4b7e-8d8e-3a7c2c9a1f00",
        "PATCH": f"/api/{user_id}/tasks/0b0e6b1c-2f0a-4b7e-8d8e-3a7c2c9a1f00/complete",
    }[method]

    response = await client.request(method, url, json={"title": "x"} if method in {"POST", "PUT"} else None)

    assert response.status_code == 401


async def test_authentication_comes_before_validation(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/api/{new_user_id()}/tasks/not-a-uuid?limit=0")

    assert response.status_code == 401


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256", "PS256", "ES256", "ES512"])
async def test_tokens_signed_by_a_published_key_are_accepted(
    client: httpx.AsyncClient, signing_keys: dict[str, SigningKey], algorithm: str
) -> None:
    user_id = new_user_id()
    token = mint(user_id, signing_keys[algorithm])

    response = await client.get(f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200, response.text


async def test_hs256_token_signed_with_the_shared_secret_is_accepted(client: httpx.AsyncClient) -> None:
    user_id = new_user_id()
    token = mint(user_id, secret=HS_SECRET)

    response = await client.get(f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200, response.text


async def test_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.get(alice.tasks_url(), headers={"Authorization": f"bEaReR {alice.token}"})

    assert response.status_code == 200


async def test_expiry_within_the_leeway_is_tolerated(
    client: httpx.AsyncClient, signing_keys: dict[str, SigningKey]
) -> None:
    user_id = new_user_id()
    token = mint(user_id, signing_keys["EdDSA"], expires_in=-5)  # default leeway is 30 s of clock skew

    response = await client.get(f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200


async def test_uuid_user_ids_work(client: httpx.AsyncClient, make_account: Callable[..., Account]) -> None:
    account = make_account("3f2504e0-4f89-11d3-9a0c-0305e82c3301")

    created = await client.post(account.tasks_url(), json={"title": "uuid user"}, headers=account.headers)
    listed = await client.get(account.tasks_url(), headers=account.headers)

    assert created.status_code == 201
    assert [t["id"] for t in listed.json()] == [created.json()["id"]]


async def test_token_in_the_query_string_is_not_accepted(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.get(f"{alice.tasks_url()}?access_token={alice.token}&token={alice.token}")

    assert response.status_code == 401


async def test_token_in_a_cookie_is_not_accepted(client: httpx.AsyncClient, alice: Account) -> None:
    client.cookies.set("access_token", alice.token)
    client.cookies.set("better-auth.session_token", alice.token)
    try:
        response = await client.get(alice.tasks_url())
    finally:
        client.cookies.clear()

    assert response.status_code == 401


async def test_hs256_token_is_refused_when_only_a_jwks_is_configured(
    app_client: Callable[..., Any], jwks_server: JWKSServer
) -> None:
    user_id = new_user_id()
    async with app_client(jwks_server, jwt_secret=None) as only_jwks:
        response = await only_jwks.get(
            f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer {mint(user_id, secret=HS_SECRET)}"}
        )

    assert response.status_code == 401
    assert "algorithm not allowed" in response.headers["www-authenticate"]


async def test_asymmetric_token_is_refused_when_only_a_secret_is_configured(
    app_client: Callable[..., Any], signing_keys: dict[str, SigningKey]
) -> None:
    user_id = new_user_id()
    async with app_client(None) as only_secret:
        response = await only_secret.get(
            f"/api/{user_id}/tasks",
            headers={"Authorization": f"Bearer {mint(user_id, signing_keys['EdDSA'])}"},
        )

    assert response.status_code == 401
    assert "algorithm not allowed" in response.headers["www-authenticate"]


async def test_without_any_key_source_every_token_is_refused(
    app_client: Callable[..., Any], signing_keys: dict[str, SigningKey]
) -> None:
    user_id = new_user_id()
    async with app_client(None, jwt_secret=None) as unconfigured:
        responses = [
            await unconfigured.get(f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer {token}"})
            for token in (mint(user_id, secret=HS_SECRET), mint(user_id, signing_keys["EdDSA"]))
        ]

    assert [r.status_code for r in responses] == [401, 401]


async def test_better_auth_url_alone_configures_jwks_issuer_and_audience(
    app_client: Callable[..., Any], signing_keys: dict[str, SigningKey]
) -> None:
    server = JWKSServer(keys=[signing_keys["EdDSA"]]).start()
    user_id = new_user_id()
    try:
        async with app_client(
            None, better_auth_url=server.origin, jwt_secret=None, jwt_issuer=None, jwt_audience=None
        ) as better_auth:
            good = mint(user_id, signing_keys["EdDSA"], issuer=server.origin, audience=server.origin)
            wrong_audience = mint(user_id, signing_keys["EdDSA"], issuer=server.origin, audience=ISSUER)
            accepted = await better_auth.get(f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer {good}"})
            refused = await better_auth.get(
                f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer {wrong_audience}"}
            )
    finally:
        server.stop()

    assert accepted.status_code == 200, accepted.text
    assert refused.status_code == 401
