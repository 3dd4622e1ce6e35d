"""The JWKS cache: no fetch on the hot path, rotation picked up, floods and outages contained."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

import app.auth.keys
from app.auth.keys import MAX_JWKS_BYTES, MAX_KID_LENGTH, JWKSCache, parse_jwks
from tests.support.factories import new_user_id
from tests.support.issuer import JWKSServer, SigningKey, mint, new_key


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
    await jwks.refresh()  # joins the fetch under way: no second one (the count below says so)

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

    clock = FakeClock()
    jwks = JWKSCache(own_jwks.url, timeout=2.0, min_refresh_interval=0.0, max_age=300.0)
    verifier = TokenVerifier(secret=None, jwks=jwks, issuer=None, audience=None, leeway=0, clock=clock)
    expires_at = int(clock.now) + 10
    token = mint("someone", issuer_key, issuer=None, audience=None, iat=int(clock.now), exp=expires_at)
    try:
        assert (await verifier.verify(token)).id == "someone"
        clock.now = expires_at - 0.001
        assert (await verifier.verify(token)).id == "someone"  # from memory this time
        clock.now = expires_at  # the second of expiry has come
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


# --- an endpoint that answers when the test says so -----------------------------------------------------


def streamed(body: bytes, **headers: str) -> httpx.Response:
    """An answer whose body arrives as a stream, as a real endpoint's does (``content=`` is read up front)."""
    return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))


class HeldJWKS:
    """A JWKS endpoint (an httpx transport) that holds each answer until ``released`` is set.

    The fetch is then in flight for exactly as long as the test wants, with no sleeping on either side.
    """

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = keys
        self.requests: list[httpx.Request] = []
        self.arrived = asyncio.Event()
        self.released = asyncio.Event()
        self.abandoned = asyncio.Event()
        self.answer: Callable[[], httpx.Response] = lambda: streamed(
            json.dumps({"keys": [key.public_jwk for key in self.keys]}).encode()
        )
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.arrived.set()
        try:
            await self.released.wait()
        except asyncio.CancelledError:
            self.abandoned.set()
            raise
        return self.answer()


@asynccontextmanager
async def cache_over(held: HeldJWKS, **options: Any) -> AsyncIterator[JWKSCache]:
    settings: dict[str, Any] = {"timeout": 2.0, "min_refresh_interval": 1.0, "max_age": 300.0, **options}
    async with httpx.AsyncClient(transport=held.transport) as client:
        jwks = JWKSCache("http://issuer.test/jwks", client=client, **settings)
        try:
            yield jwks
        finally:
            await jwks.aclose()


async def one_turn_of_the_event_loop() -> None:
    """Let the tasks already scheduled run up to their next wait (a yield, not a timed sleep)."""
    await asyncio.sleep(0)


async def test_requests_waiting_for_a_slow_fetch_all_get_its_keys(issuer_key: SigningKey) -> None:
    held, clock = HeldJWKS([issuer_key]), FakeClock()
    async with cache_over(held, clock=clock) as jwks:
        waiting = [asyncio.create_task(jwks.candidates(issuer_key.kid, "EdDSA")) for _ in range(10)]
        await held.arrived.wait()
        assert not any(request.done() for request in waiting)

        clock.now += 3.0  # the endpoint takes three seconds to answer: three refresh intervals
        held.released.set()
        results = await asyncio.gather(*waiting)

    assert all(keys and keys[0].kid == issuer_key.kid for keys in results)
    assert len(held.requests) == 1


async def test_a_request_arriving_during_a_fetch_waits_for_it_instead_of_fetching_again(
    issuer_key: SigningKey,
) -> None:
    held, clock = HeldJWKS([issuer_key]), FakeClock()
    async with cache_over(held, clock=clock) as jwks:
        first = asyncio.create_task(jwks.candidates(issuer_key.kid, "EdDSA"))
        await held.arrived.wait()
        clock.now += 5.0  # the fetch has been under way for five refresh intervals
        late = asyncio.create_task(jwks.candidates(issuer_key.kid, "EdDSA"))
        await one_turn_of_the_event_loop()
        held.released.set()

        assert await first
        assert await late

    assert len(held.requests) == 1


async def test_after_a_slow_fetch_the_next_waits_a_whole_interval(issuer_key: SigningKey) -> None:
    held, clock = HeldJWKS([issuer_key]), FakeClock()
    async with cache_over(held, clock=clock) as jwks:
        first = asyncio.create_task(jwks.candidates("unknown", "EdDSA"))
        await held.arrived.wait()
        clock.now += 3.0
        held.released.set()
        await first

        clock.now += 0.5
        assert await jwks.candidates("still-unknown", "EdDSA") == []
        requests_within_the_interval = len(held.requests)
        clock.now += 0.5
        await jwks.candidates("still-unknown", "EdDSA")

    assert requests_within_the_interval == 1
    assert len(held.requests) == 2


async def test_with_a_hung_endpoint_every_waiter_gives_up_with_the_one_fetch(issuer_key: SigningKey) -> None:
    held = HeldJWKS([issuer_key])
    held.released.set()
    # No refresh interval: only the sharing of the fetch in flight can keep the waiters from fetching in turn.
    async with cache_over(held, timeout=0.2, min_refresh_interval=0.0) as jwks:
        assert await jwks.candidates(issuer_key.kid, "EdDSA")
        held.released.clear()  # from now on the endpoint accepts and never answers

        *unknown, known = await asyncio.gather(
            *(jwks.candidates(f"unknown-{n}", "EdDSA") for n in range(5)), jwks.candidates(None, "EdDSA")
        )

        assert unknown == [[]] * 5
        assert [key.kid for key in known] == [issuer_key.kid]  # the cached keys still work
        assert held.abandoned.is_set()
        assert (len(held.requests), jwks.failures) == (2, 1)


async def test_a_cancelled_request_does_not_cancel_the_fetch_others_wait_for(issuer_key: SigningKey) -> None:
    held = HeldJWKS([issuer_key])
    async with cache_over(held) as jwks:
        leaving = asyncio.create_task(jwks.candidates(issuer_key.kid, "EdDSA"))
        staying = asyncio.create_task(jwks.candidates(issuer_key.kid, "EdDSA"))
        await held.arrived.wait()

        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        held.released.set()

        assert await staying
        assert not held.abandoned.is_set()
        assert len(held.requests) == 1


async def test_closing_the_cache_cancels_the_fetch_in_flight(issuer_key: SigningKey) -> None:
    held = HeldJWKS([issuer_key])
    async with cache_over(held) as jwks:
        waiting = asyncio.create_task(jwks.candidates(issuer_key.kid, "EdDSA"))
        await held.arrived.wait()

        await jwks.aclose()

        assert held.abandoned.is_set()
        assert await waiting == []


# --- hostile JWKS documents: refused or skipped, never raised into a request ----------------------------


def deeply_nested(depth: int) -> bytes:
    return b'{"keys": [' + b'{"a": ' * depth + b"1" + b"}" * depth + b"]}"


NOT_A_KEY_SET = {
    "keys is an object": b'{"keys": {"kty": "OKP"}}',
    "keys is null": b'{"keys": null}',
    "no keys": b"{}",
    "a bare list": b"[]",
    "not JSON": b"<html>Bad gateway</html>",
    "empty": b"",
    "not UTF-8": b'{"keys": [{"kid": "\xff"}]}',
    "nested thousands deep": deeply_nested(10_000),
    "an integer too large": b'{"keys": [{"e": ' + b"9" * 5000 + b"}]}",
}


@pytest.mark.parametrize("payload", NOT_A_KEY_SET.values(), ids=NOT_A_KEY_SET.keys())
def test_a_document_that_is_not_a_key_set_is_refused_as_invalid(payload: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the one type the cache expects, whatever the message
        parse_jwks(payload)


@pytest.mark.parametrize("payload", NOT_A_KEY_SET.values(), ids=NOT_A_KEY_SET.keys())
async def test_a_hostile_answer_fails_the_fetch_and_keeps_the_cached_keys(
    issuer_key: SigningKey, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    held = HeldJWKS([issuer_key])
    held.released.set()
    async with cache_over(held, min_refresh_interval=0.0) as jwks:
        assert await jwks.candidates(issuer_key.kid, "EdDSA")
        held.answer = lambda: streamed(payload)

        with caplog.at_level(logging.WARNING, logger="app.auth.keys"):
            assert await jwks.candidates("unknown", "EdDSA") == []

        assert await jwks.candidates(issuer_key.kid, "EdDSA")
        assert jwks.failures == 1
    assert [(record.levelno, record.exc_info) for record in caplog.records] == [(logging.WARNING, None)]


async def test_a_compressed_answer_is_refused_before_it_is_inflated(issuer_key: SigningKey) -> None:
    held = HeldJWKS([issuer_key])
    held.released.set()
    # Compressed, a JWKS of blanks far larger than the cap fits in one network chunk.
    bomb = gzip.compress(b'{"keys": [' + b" " * (64 * MAX_JWKS_BYTES) + b"]}")
    held.answer = lambda: streamed(bomb, **{"Content-Encoding": "gzip"})
    async with cache_over(held) as jwks:
        assert await jwks.candidates(issuer_key.kid, "EdDSA") == []
        assert jwks.failures == 1
    assert held.requests[0].headers["Accept-Encoding"] == "identity"


def test_members_that_are_not_objects_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    good = new_key("EdDSA").public_jwk
    document = {"keys": [1, "key", None, [good], good, True]}

    with caplog.at_level(logging.WARNING, logger="app.auth.keys"):
        keys = parse_jwks(json.dumps(document).encode())

    assert [key.kid for key in keys] == [good["kid"]]
    assert len(caplog.records) == 1  # one line for the document, not one per member
    assert "5 malformed" in caplog.text


@pytest.mark.parametrize(
    "kid", [42, ["a"], {"a": 1}, "k" * (MAX_KID_LENGTH + 1)], ids=["int", "list", "object", "huge"]
)
def test_a_key_with_an_odd_kid_is_skipped_not_made_kid_less(kid: object) -> None:
    good = new_key("EdDSA").public_jwk
    document = {"keys": [{**new_key("EdDSA").public_jwk, "kid": kid}, good]}

    assert [key.kid for key in parse_jwks(json.dumps(document).encode())] == [good["kid"]]


@pytest.mark.parametrize("field", ["kty", "crv", "alg", "use"])
@pytest.mark.parametrize("value", [["Ed25519"], {"crv": "Ed25519"}, 1, None])
def test_a_field_of_the_wrong_json_type_costs_at_most_its_own_member(field: str, value: object) -> None:
    good = new_key("ES256").public_jwk
    odd = {k: v for k, v in new_key("EdDSA").public_jwk.items() if k != "alg"} | {field: value}

    kids = [key.kid for key in parse_jwks(json.dumps({"keys": [odd, good]}).encode())]

    # Skipped, or (an ``alg`` that is not a string) read by what its key type permits, as if it had none.
    assert kids in ([good["kid"]], [odd["kid"], good["kid"]])


def test_whatever_the_jwk_library_raises_only_skips_that_member(monkeypatch: pytest.MonkeyPatch) -> None:
    good, strange = new_key("EdDSA").public_jwk, new_key("EdDSA").public_jwk
    real = app.auth.keys.PyJWK

    def library(jwk: dict[str, Any], algorithm: str | None = None) -> Any:
        if jwk["kid"] == strange["kid"]:
            raise KeyError("x")  # not among the errors PyJWT documents today
        return real(jwk, algorithm=algorithm)

    monkeypatch.setattr(app.auth.keys, "PyJWK", library)

    assert [key.kid for key in parse_jwks(json.dumps({"keys": [strange, good]}).encode())] == [good["kid"]]
