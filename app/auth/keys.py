"""Verification keys: the HS256 shared secret and a JWKS cached in process.

The JWKS is fetched at start-up and then only when a token names a key id we do not hold (key rotation)
or the cached set is older than its maximum age. A fetch is single-flight: every request that needs the
JWKS while one is under way waits for that one (never longer than the timeout), and the next may start
only a refresh interval after the last one *ended*, so neither a slow endpoint nor a flood of tokens with
random ``kid`` values costs more than one fetch per interval. A JWKS outage, or an answer that is not a
key set, leaves the cached keys working.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
from jwt import PyJWK

from app.observability.metrics import JWKS_REFRESHES

__all__ = ("ASYMMETRIC_ALGORITHMS", "HMAC_ALGORITHMS", "JWKSCache", "VerificationKey")

logger = logging.getLogger(__name__)

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_EDWARDS_CURVES = frozenset({"Ed25519", "Ed448"})
#: A JWKS larger than this is not a key set; refuse it rather than buffer it.
MAX_JWKS_BYTES = 256 * 1024
#: Key ids are short labels (Better Auth's are UUID-sized); a longer one is not a key we will index.
MAX_KID_LENGTH = 256


class VerificationKey(msgspec.Struct, frozen=True):
    """A public key and the algorithms it may verify (never chosen by the token alone)."""

    kid: str | None
    key: object
    algorithms: frozenset[str]


class _JWKSDocument(msgspec.Struct):
    # Members are checked one by one: a member that is not an object is skipped, not a reason to refuse the set.
    keys: list[object]


def _algorithms_for(jwk: dict[str, Any]) -> frozenset[str]:
    """The algorithms a JWK may be used with: its declared ``alg``, else what its key type permits."""
    declared = jwk.get("alg")
    if isinstance(declared, str):
        return frozenset({declared}) & ASYMMETRIC_ALGORITHMS
    kty, crv = jwk.get("kty"), jwk.get("crv")
    # ``crv`` comes from the network: it may be a list or an object, which no set or dict lookup may see.
    if not isinstance(crv, str):
        crv = None
    if kty == "RSA":
        return _RSA
    if kty == "EC" and crv in _EC_BY_CURVE:
        return frozenset({_EC_BY_CURVE[crv]})
    if kty == "OKP" and crv in _EDWARDS_CURVES:
        return frozenset({"EdDSA"})
    return frozenset()


def _verification_key(member: object) -> VerificationKey | None:
    """The key one JWKS member holds; None when it is not for us, ``ValueError`` when it is malformed."""
    if not isinstance(member, dict):
        raise ValueError(f"a member is not an object but {type(member).__name__}")
    kid = member.get("kid")
    if kid is not None and not (isinstance(kid, str) and len(kid) <= MAX_KID_LENGTH):
        # Not a kid-less key either: that would offer it to every token without a ``kid``.
        raise ValueError(f"a kid is not a string of at most {MAX_KID_LENGTH} characters")
    if member.get("use", "sig") != "sig" or any(k in member for k in ("d", "k")):
        # Encryption keys, private keys and symmetric keys have no place in a verification set.
        return None
    algorithms = _algorithms_for(member)
    if not algorithms:
        return None
    try:
        key = PyJWK(member, algorithm=min(algorithms))
    except Exception as exc:  # untrusted input into a library: whatever it raises, the member is unusable
        raise ValueError(f"JWK {kid!r} is unusable: {exc}") from None
    return VerificationKey(kid=kid, key=key.key, algorithms=algorithms)


def parse_jwks(payload: bytes) -> list[VerificationKey]:
    """Parse a JWKS document, keeping the public signature keys we can use and skipping the rest.

    Raises ``ValueError`` (msgspec's decoding errors are ones) when the document is not a key set at all.
    """
    try:
        document = msgspec.json.decode(payload, type=_JWKSDocument)
    except RecursionError:  # how msgspec answers JSON nested thousands deep
        raise ValueError("JWKS nested too deeply") from None
    keys: list[VerificationKey] = []
    malformed, first_problem = 0, ""
    for member in document.keys:
        try:
            key = _verification_key(member)
        except ValueError as exc:  # a malformed member must not poison the set
            malformed, first_problem = malformed + 1, first_problem or str(exc)
            continue
        if key is not None:
            keys.append(key)
    if malformed:
        # One line per document, not per member: a hostile set can hold a hundred thousand of them.
        logger.warning("Skipped %d malformed JWKS members; the first: %.200s", malformed, first_problem)
    return keys


class JWKSCache:
    """Holds the keys of one JWKS URL; refreshes are async, bounded in time, single-flight and rate-limited."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        min_refresh_interval: float,
        max_age: float,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.min_refresh_interval = min_refresh_interval
        self.max_age = max_age
        self._client = client
        self._owns_client = client is None
        self._clock = clock
        self._by_kid: dict[str, VerificationKey] = {}
        self._keys: tuple[VerificationKey, ...] = ()
        self._loaded_at: float | None = None
        self._last_fetch_ended = float("-inf")
        self._fetching: asyncio.Task[None] | None = None
        self.fetches = 0
        self.failures = 0

    @property
    def loaded(self) -> bool:
        """Whether a JWKS has been fetched successfully at least once."""
        return self._loaded_at is not None

    async def candidates(self, kid: str | None, algorithm: str) -> list[VerificationKey]:
        """Keys that may verify a token with this ``kid`` and ``alg``; fetches only for an unknown ``kid``."""
        found = self._lookup(kid, algorithm)
        if found:
            self._refresh_in_background_if_stale()
            return found
        await self.refresh()
        return self._lookup(kid, algorithm)

    def holds(self, key: VerificationKey) -> bool:
        """Whether ``key`` is still in the current key set (a refresh may have removed it)."""
        return self._by_kid.get(key.kid) is key if key.kid is not None else key in self._keys

    def _lookup(self, kid: str | None, algorithm: str) -> list[VerificationKey]:
        if kid is not None:
            key = self._by_kid.get(kid)
            return [key] if key is not None and algorithm in key.algorithms else []
        # A token without a key id may only be checked against keys that allow its algorithm.
        return [key for key in self._keys if algorithm in key.algorithms]

    async def refresh(self) -> None:
        """Wait for the fetch under way, or start one if the refresh interval allows; never longer than ``timeout``."""
        fetch = self._start_fetch()
        if fetch is not None:
            # The fetch belongs to every caller waiting on it. Unlike awaiting it, asyncio.wait does not cancel it
            # when this caller is cancelled (a client hanging up) and does not raise what it raised. No timeout of
            # our own: the fetch ends by a deadline set when it started, before this caller arrived.
            await asyncio.wait((fetch,))

    def _start_fetch(self) -> asyncio.Task[None] | None:
        """The fetch under way; else a new one, unless the last one ended less than an interval ago."""
        if self._fetching is None and self._clock() - self._last_fetch_ended >= self.min_refresh_interval:
            deadline = asyncio.get_running_loop().time() + self.timeout
            self._fetching = asyncio.create_task(self._fetch(deadline), name=f"JWKS fetch from {self.url}")
        return self._fetching

    async def _fetch(self, deadline: float) -> None:
        self.fetches += 1
        try:
            async with asyncio.timeout_at(deadline):
                payload = await self._download()
            keys = parse_jwks(payload)
        except (httpx.HTTPError, TimeoutError, ValueError) as exc:  # msgspec's errors are ValueErrors
            self._fetch_failed(exc)
            return
        except Exception as exc:
            # Not an answer we foresaw: a bug here must not cost the cached keys either, but it needs its traceback.
            logger.exception("JWKS refresh from %s failed unexpectedly", self.url)
            self._fetch_failed(exc)
            return
        finally:
            # Measured from the end: a fetch slower than the interval must not allow the next one at once.
            self._last_fetch_ended = self._clock()
            if self._fetching is asyncio.current_task():
                self._fetching = None
        self._keys = tuple(keys)
        self._by_kid = {key.kid: key for key in keys if key.kid is not None}
        self._loaded_at = self._clock()
        JWKS_REFRESHES.labels("loaded").inc()
        logger.info("Loaded %d verification keys from %s", len(keys), self.url)

    def _fetch_failed(self, exc: Exception) -> None:
        self.failures += 1
        JWKS_REFRESHES.labels("failed").inc()
        logger.warning(
            "JWKS refresh from %s failed (%s: %.200s); keeping %d cached keys",
            self.url,
            type(exc).__name__,
            exc,
            len(self._keys),
        )

    async def _download(self) -> bytes:
        client = self._client
        if client is None:
            client = self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        async with client.stream("GET", self.url, headers=headers) as response:
            response.raise_for_status()
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding != "identity":
                # httpx inflates a whole network chunk at once, so a compressed answer could grow far past
                # MAX_JWKS_BYTES before it is counted. We asked for none; refuse one.
                raise ValueError(f"JWKS sent with Content-Encoding {encoding[:40]!r}")
            body = bytearray()
            async for chunk in response.aiter_raw():
                body.extend(chunk)
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
            return bytes(body)

    def _refresh_in_background_if_stale(self) -> None:
        loaded_at = self._loaded_at
        if loaded_at is not None and self._clock() - loaded_at >= self.max_age:
            # Revoked keys disappear from the JWKS; re-reading it now and then makes them stop working here.
            # Nobody waits for this fetch: the token at hand is served from the cache.
            self._start_fetch()

    async def aclose(self) -> None:
        """Cancel the fetch under way (its waiters return with the keys held) and close the client if ours."""
        fetch, self._fetching = self._fetching, None
        if fetch is not None:
            fetch.cancel()
            await asyncio.wait((fetch,))  # let it unwind before its client is closed
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
