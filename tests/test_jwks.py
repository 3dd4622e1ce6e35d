"""The JWKS cache: no fetch on the hot path, rotation picked up, floods and outages contained."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from app.auth.keys import JWKSCache, parse_jwks
from tests.factories import new_user_id
from tests.issuer import JWKSServer, SigningKey, mint, new_key


@pytest.fixture
def issuer_key() -> SigningKey:
    return new_key("EdDSA")


@pytest.fixture
def own_jwks(issuer_key: SigningKey) -> Iterator[JWKSServer]:
    """A JWKS endpoint of this test's own, so fetch counts are not shared with other tests."""
    server = JWKSServer(keys=[issuer_key]).start()
    yield server
    server.stop()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def get_tasks(client: httpx.AsyncClient, key: SigningKey, **mint_options: Any) -> int:
    user_id = new_user_id()
    token = mint(user_id, key, **mint_options)
    response = await client.get(f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code != 500, response.text
    return response.status_code


async def test_keys_are_fetched_once_at_startup_not_per_request(
    app_client: Callable[..., Any], own_jwks: JWKSServer, issuer_key: SigningKey
) -> None:
    async with app_client(own_jwks) as client:
        statuses = [await get_tasks(client, issuer_key) for _ in range(25)]

    assert statuses == [200] * 25
    assert own_jwks.fetches == 1


async def test_a_rotated_key_is_accepted_without_a_restart(
    app_client: Callable[..., Any], own_jwks: JWKSServer, issuer_key: SigningKey
) -> None:
    rotated = new_key("EdDSA")
    async with app_client(own_jwks, jwt_jwks_min_refresh_interval_seconds=0) as client:
        assert await get_tasks(client, issuer_key) == 200
        own_jwks.keys = [rotated, issuer_key]

        assert await get_tasks(client, rotated) == 200
        assert await get_tasks(client, rotated) == 200

    assert own_jwks.fetches == 2  # start-up, then exactly one for the new kid


async def test_a_flood_of_unknown_kids_is_rate_limited(
    app_client: Callable[..., Any], own_jwks: JWKSServer, issuer_key: SigningKey
) -> None:
    async with app_client(own_jwks, jwt_jwks_min_refresh_interval_seconds=60) as client:
        statuses = await asyncio.gather(*(get_tasks(client, new_key("EdDSA")) for _ in range(40)))
        still_valid = await get_tasks(client, issuer_key)

    assert set(statuses) == {401}
    assert still_valid == 200
    assert own_jwks.fetches <= 2


async def test_cached_keys_keep_working_when_the_jwks_endpoint_fails(
    app_client: Callable[..., Any], own_jwks: JWKSServer, issuer_key: SigningKey
) -> None:
    async with app_client(own_jwks, jwt_jwks_min_refresh_interval_seconds=0) as client:
        own_jwks.status = 503
        unknown = await get_tasks(client, new_key("EdDSA"))
        known = await get_tasks(client, issuer_key)
        own_jwks.stop()
        unknown_after_stop = await get_tasks(client, new_key("EdDSA"))
        known_after_stop = await get_tasks(client, issuer_key)

    assert (unknown, known, unknown_after_stop, known_after_stop) == (401, 200, 401, 200)


async def test_a_slow_jwks_endpoint_gives_401_not_a_hang(
    app_client: Callable[..., Any], own_jwks: JWKSServer, issuer_key: SigningKey
) -> None:
    async with app_client(own_jwks, jwt_jwks_min_refresh_interval_seconds=0, jwt_jwks_timeout_seconds=0.3) as client:
        own_jwks.delay = 2.0
        try:
            unknown = await get_tasks(client, new_key("EdDSA"))
            known = await get_tasks(client, issuer_key)
        finally:
            own_jwks.delay = 0.0

    assert (unknown, known) == (401, 200)


async def test_service_starts_while_the_jwks_endpoint_is_down_and_recovers(
    app_client: Callable[..., Any], own_jwks: JWKSServer, issuer_key: SigningKey
) -> None:
    own_jwks.status = 500
    async with app_client(own_jwks, jwt_jwks_min_refresh_interval_seconds=0) as client:
        during_outage = await get_tasks(client, issuer_key)
        own_jwks.status = 200
        after_recovery = await get_tasks(client, issuer_key)

    assert (during_outage, after_recovery) == (401, 200)


# --- the cache on its own, with a controllable clock ----------------------------------------------------


@pytest.fixture
async def cache(own_jwks: JWKSServer) -> AsyncIterator[tuple[JWKSCache, FakeClock]]:
    clock = FakeClock()
    jwks = JWKSCache(own_jwks.url, timeout=2.0, min_refresh_interval=1.0, max_age=300.0, clock=clock)
    yield jwks, clock
    await jwks.aclose()


async def test_concurrent_misses_share_a_single_fetch(cache: tuple[JWKSCache, FakeClock], own_jwks: JWKSServer) -> None:
    jwks, _ = cache

    results = await asyncio.gather(*(jwks.candidates(f"unknown-{n}", "EdDSA") for n in range(30)))

    assert results == [[]] * 30
    assert own_jwks.fetches == 1


async def test_misses_fetch_at_most_once_per_interval(
    cache: tuple[JWKSCache, FakeClock], own_jwks: JWKSServer, issuer_key: SigningKey
) -> None:
    jwks, clock = cache
    await jwks.candidates("unknown", "EdDSA")
    for _ in range(10):
        clock.now += 0.25
        await jwks.candidates("unknown", "EdDSA")

    # 2.5 s of misses at 4 per second: the first fetch, then one per elapsed second.
    assert own_jwks.fetches == 3
    assert await jwks.candidates(issuer_key.kid, "EdDSA")


async def test_stale_keys_are_refreshed_in_the_background(
    cache: tuple[JWKSCache, FakeClock], own_jwks: JWKSServer, issuer_key: SigningKey
) -> None:
    jwks, clock = cache
    assert await jwks.candidates(issuer_key.kid, "EdDSA")
    own_jwks.keys = []  # the issuer revoked its key
    clock.now += 301

    assert await jwks.candidates(issuer_key.kid, "EdDSA")  # served from cache, refresh scheduled
    for _ in range(50):
        if own_jwks.fetches == 2 and not await jwks.candidates(issuer_key.kid, "EdDSA"):
            break
        await asyncio.sleep(0.01)

    assert own_jwks.fetches == 2
    assert await jwks.candidates(issuer_key.kid, "EdDSA") == []


def test_key_algorithms_come_from_the_jwk_not_the_token() -> None:
    ed, rsa, ec = new_key("EdDSA"), new_key("RS256"), new_key("ES256")
    rsa_without_alg = {k: v for k, v in new_key("PS256").public_jwk.items() if k != "alg"}
    document = {"keys": [ed.public_jwk, rsa.public_jwk, ec.public_jwk, rsa_without_alg]}

    keys = {key.kid: key.algorithms for key in parse_jwks(json.dumps(document).encode())}

    assert keys[ed.kid] == {"EdDSA"}
    assert keys[rsa.kid] == {"RS256"}
    assert keys[ec.kid] == {"ES256"}
    assert keys[rsa_without_alg["kid"]] == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}


def test_unusable_and_private_keys_are_skipped() -> None:
    good = new_key("EdDSA").public_jwk
    document = {
        "keys": [
            good,
            {**new_key("EdDSA").public_jwk, "d": "private-part"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "symmetric"},
            {**new_key("ES256").public_jwk, "use": "enc"},
            {"kty": "EC", "crv": "P-256", "kid": "broken", "x": "AA", "y": "AA"},
            {"kty": "unknown", "kid": "strange"},
        ]
    }

    assert [key.kid for key in parse_jwks(json.dumps(document).encode())] == [good["kid"]]


async def test_a_remembered_token_still_expires_to_the_second(own_jwks: JWKSServer, issuer_key: SigningKey) -> None:
    from app.auth.tokens import InvalidTokenError, TokenVerifier  # noqa: PLC0415

    jwks = JWKSCache(own_jwks.url, timeout=2.0, min_refresh_interval=0.0, max_age=300.0)
    verifier = TokenVerifier(secret=None, jwks=jwks, issuer=None, audience=None, leeway=0)
    expires_at = int(time.time()) + 1
    token = mint("someone", issuer_key, issuer=None, audience=None, exp=expires_at)
    try:
        assert (await verifier.verify(token)).id == "someone"
        assert (await verifier.verify(token)).id == "someone"  # from memory this time
        await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.01)  # until the second of expiry has come
        with pytest.raises(InvalidTokenError, match="token expired"):
            await verifier.verify(token)
    finally:
        await jwks.aclose()


async def test_a_remembered_token_stops_working_when_its_key_is_revoked(
    own_jwks: JWKSServer, issuer_key: SigningKey
) -> None:
    from app.auth.tokens import InvalidTokenError, TokenVerifier  # noqa: PLC0415

    jwks = JWKSCache(own_jwks.url, timeout=2.0, min_refresh_interval=0.0, max_age=300.0)
    verifier = TokenVerifier(secret=None, jwks=jwks, issuer=None, audience=None, leeway=0)
    token = mint("someone", issuer_key, issuer=None, audience=None)
    try:
        assert (await verifier.verify(token)).id == "someone"
        own_jwks.keys = []  # the issuer withdraws the key
        await jwks.refresh()
        with pytest.raises(InvalidTokenError, match="unknown signing key"):
            await verifier.verify(token)
    finally:
        await jwks.aclose()
