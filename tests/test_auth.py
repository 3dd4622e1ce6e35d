"""Authentication: which tokens are accepted, and a 401 with ``WWW-Authenticate`` for every way one is not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from tests.factories import Account, new_user_id
from tests.issuer import AUDIENCE, HS_SECRET, ISSUER, JWKSServer, SigningKey, mint, new_key

TokenBuilder = Callable[[str, dict[str, SigningKey]], str]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_by_hand(payload: dict[str, Any], secret: bytes, header: dict[str, Any] | None = None) -> str:
    """HS256 with an arbitrary secret; PyJWT refuses to use a PEM public key as one, an attacker does not."""
    signing_input = (
        f"{b64(json.dumps(header or {'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(payload).encode())}"
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(sub: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE, **extra}


def tamper_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[10] != "A" else "B").join([signature[:10], signature[11:]])
    return f"{head}.{payload}.{flipped}"


def swap_payload(token: str, sub: str) -> str:
    head, _, signature = token.split(".")
    return f"{head}.{b64(json.dumps(claims(sub)).encode())}.{signature}"


# case -> (how the token is built, the reason the 401 gives in WWW-Authenticate)
REJECTED: dict[str, tuple[TokenBuilder, str]] = {
    "garbage": (
        lambda sub, keys: "not-a-token",
        "malformed token",
    ),
    "two segments": (
        lambda sub, keys: ".".join(mint(sub, keys["EdDSA"]).split(".")[:2]),
        "malformed token",
    ),
    "truncated": (
        # 86 base64 characters of signature cut to 85: no longer decodable at all
        lambda sub, keys: mint(sub, keys["EdDSA"])[:-1],
        "malformed token",
    ),
    "bad signature": (
        lambda sub, keys: tamper_signature(mint(sub, keys["EdDSA"])),
        "invalid signature",
    ),
    "tampered payload": (
        lambda sub, keys: swap_payload(mint(new_user_id(), keys["EdDSA"]), sub),
        "invalid signature",
    ),
    "expired": (
        lambda sub, keys: mint(sub, keys["EdDSA"], expires_in=-120),
        "token expired",
    ),
    "not yet valid (nbf)": (
        lambda sub, keys: mint(sub, keys["EdDSA"], not_before=120),
        "token not yet valid",
    ),
    "issued in the future (iat)": (
        lambda sub, keys: mint(sub, keys["EdDSA"], iat=int(time.time()) + 600),
        "token not yet valid",
    ),
    "wrong issuer": (
        lambda sub, keys: mint(sub, keys["EdDSA"], issuer="https://evil.example"),
        "invalid issuer",
    ),
    "missing issuer": (
        lambda sub, keys: mint(sub, keys["EdDSA"], issuer=None),
        "missing claim iss",
    ),
    "wrong audience": (
        lambda sub, keys: mint(sub, keys["EdDSA"], audience="https://other-api.example"),
        "invalid audience",
    ),
    "missing audience": (
        lambda sub, keys: mint(sub, keys["EdDSA"], audience=None),
        "missing claim aud",
    ),
    "missing sub": (
        lambda sub, keys: mint(sub, keys["EdDSA"], omit=("sub",)),
        "missing claim sub",
    ),
    "missing exp": (
        lambda sub, keys: mint(sub, keys["EdDSA"], omit=("exp",)),
        "missing claim exp",
    ),
    "numeric sub": (
        lambda sub, keys: hs256_by_hand({**claims(sub), "sub": 12345}, HS_SECRET.encode()),
        "malformed token",
    ),
    "empty sub": (
        lambda sub, keys: mint("", keys["EdDSA"]),
        "invalid subject",
    ),
    "sub with a slash": (
        lambda sub, keys: mint(f"{sub}/x", keys["EdDSA"]),
        "invalid subject",
    ),
    "alg none": (
        lambda sub, keys: jwt.encode(claims(sub), None, algorithm="none"),
        "algorithm not allowed",
    ),
    "alg none, signature kept": (
        lambda sub, keys: hs256_by_hand(claims(sub), b"", {"alg": "none"}),
        "algorithm not allowed",
    ),
    "unknown algorithm": (
        lambda sub, keys: hs256_by_hand(claims(sub), HS_SECRET.encode(), {"alg": "HS257"}),
        "algorithm not allowed",
    ),
    "HS256 with a wrong secret": (
        lambda sub, keys: mint(sub, secret="x" * 48),
        "invalid signature",
    ),
    "HS256 keyed with the RSA public key (key confusion)": (
        lambda sub, keys: hs256_by_hand(
            claims(sub), keys["RS256"].public_pem, {"alg": "HS256", "kid": keys["RS256"].kid}
        ),
        "invalid signature",
    ),
    "unknown kid": (
        lambda sub, keys: mint(sub, new_key("EdDSA")),
        "unknown signing key",
    ),
    "foreign key with a published kid": (
        lambda sub, keys: mint(sub, new_key("EdDSA"), kid=keys["EdDSA"].kid),
        "invalid signature",
    ),
    "EdDSA key presented as RS256": (
        lambda sub, keys: hs256_by_hand(claims(sub), b"irrelevant", {"alg": "RS256", "kid": keys["EdDSA"].kid}),
        "unknown signing key",
    ),
    "ES256 token under an ES512 kid": (
        lambda sub, keys: mint(sub, keys["ES256"], kid=keys["ES512"].kid),
        "unknown signing key",
    ),
    # Over the 8 KiB token limit, under the 32 KiB header cap (a larger header is a 431 before any of this).
    "10 KB token": (
        lambda sub, keys: mint(sub, keys["EdDSA"], padding="x" * 10_000),
        "token too large",
    ),
    "non-ASCII garbage": (
        lambda sub, keys: "ünïcödé.tökén.ßig",
        "malformed token",
    ),
    # Headers PyJWT itself refuses after parsing them: no valid signature is needed to reach that point.
    "crit naming a registered claim": (
        lambda sub, keys: hs256_by_hand(claims(sub), HS_SECRET.encode(), {"alg": "HS256", "crit": ["exp"]}),
        "malformed token",
    ),
    "empty crit": (
        lambda sub, keys: hs256_by_hand(claims(sub), HS_SECRET.encode(), {"alg": "HS256", "crit": []}),
        "malformed token",
    ),
    "crit that is not a list": (
        lambda sub, keys: hs256_by_hand(claims(sub), HS_SECRET.encode(), {"alg": "HS256", "crit": "exp"}),
        "malformed token",
    ),
    "numeric kid (HS256)": (
        lambda sub, keys: hs256_by_hand(claims(sub), HS_SECRET.encode(), {"alg": "HS256", "kid": 5}),
        "malformed token",
    ),
    "numeric kid (JWKS)": (
        lambda sub, keys: hs256_by_hand(claims(sub), b"irrelevant", {"alg": "EdDSA", "kid": 5}),
        "malformed token",
    ),
    "crit under a published kid (JWKS)": (
        lambda sub, keys: hs256_by_hand(
            claims(sub), b"irrelevant", {"alg": "EdDSA", "kid": keys["EdDSA"].kid, "crit": ["b64"]}
        ),
        "malformed token",
    ),
    # Signed, but with NumericDates that are not numbers in range (RFC 7519 §2).
    "exp beyond any date": (
        lambda sub, keys: hs256_by_hand({**claims(sub), "exp": 10**400}, HS_SECRET.encode()),
        "invalid claim exp",
    ),
    "exp infinite": (
        lambda sub, keys: hs256_by_hand({**claims(sub), "exp": float("inf")}, HS_SECRET.encode()),
        "malformed token",
    ),
    "exp NaN": (
        lambda sub, keys: hs256_by_hand({**claims(sub), "exp": float("nan")}, HS_SECRET.encode()),
        "malformed token",
    ),
    "iat before any date": (
        lambda sub, keys: hs256_by_hand({**claims(sub), "iat": -(10**400)}, HS_SECRET.encode()),
        "invalid claim iat",
    ),
    "nbf before any date": (
        lambda sub, keys: hs256_by_hand({**claims(sub), "nbf": -(10**400)}, HS_SECRET.encode()),
        "invalid claim nbf",
    ),
    "exp as a digit string": (
        lambda sub, keys: hs256_by_hand({**claims(sub), "exp": str(int(time.time()) + 600)}, HS_SECRET.encode()),
        "invalid claim exp",
    ),
    "nbf as a digit string": (
        lambda sub, keys: hs256_by_hand({**claims(sub), "nbf": str(int(time.time()) - 60)}, HS_SECRET.encode()),
        "invalid claim nbf",
    ),
    "exp as a boolean": (
        lambda sub, keys: hs256_by_hand({**claims(sub), "exp": True}, HS_SECRET.encode()),
        "token expired",
    ),
}


@pytest.mark.parametrize("case", list(REJECTED))
async def test_invalid_token_is_401_invalid_token(
    client: httpx.AsyncClient, signing_keys: dict[str, SigningKey], case: str
) -> None:
    user_id = new_user_id()
    build, reason = REJECTED[case]
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
