"""Verification keys: the HS256 shared secret and a JWKS cached in process.

The JWKS is fetched at start-up and then only when a token names a key id we do not hold (key rotation)
or the cached set is older than its maximum age. Refreshes are single-flight and rate-limited, so a
flood of tokens with random ``kid`` values costs at most one fetch per interval, and a JWKS outage
leaves the cached keys working.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
import msgspec
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from app.metrics import JWKS_REFRESHES

__all__ = ("ASYMMETRIC_ALGORITHMS", "HMAC_ALGORITHMS", "JWKSCache", "VerificationKey")

logger = logging.getLogger(__name__)

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
#: A JWKS larger than this is not a key set; refuse it rather than buffer it.
MAX_JWKS_BYTES = 256 * 1024


class VerificationKey(msgspec.Struct, frozen=True):
    """A public key and the algorithms it may verify (never chosen by the token alone)."""

    kid: str | None
    key: object
    algorithms: frozenset[str]


class _JWKSDocument(msgspec.Struct):
    keys: list[dict[str, object]]


def _algorithms_for(jwk: dict[str, object]) -> frozenset[str]:
    """The algorithms a JWK may be used with: its declared ``alg``, else what its key type permits."""
    declared = jwk.get("alg")
    if isinstance(declared, str):
        return frozenset({declared}) & ASYMMETRIC_ALGORITHMS
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        return _RSA
    if kty == "EC" and isinstance(crv, str) and crv in _EC_BY_CURVE:
        return frozenset({_EC_BY_CURVE[crv]})
    if kty == "OKP" and crv in {"Ed25519", "Ed448"}:
        return frozenset({"EdDSA"})
    return frozenset()


def parse_jwks(payload: bytes) -> list[VerificationKey]:
    """Parse a JWKS document, keeping the public signature keys we can use and skipping the rest."""
    document = msgspec.json.decode(payload, type=_JWKSDocument)
    keys: list[VerificationKey] = []
    for jwk in document.keys:
        if jwk.get("use", "sig") != "sig" or any(k in jwk for k in ("d", "k")):
            # Encryption keys, private keys and symmetric keys have no place in a verification set.
            continue
        algorithms = _algorithms_for(jwk)
        if not algorithms:
            continue
        try:
            key = PyJWK(jwk, algorithm=next(iter(sorted(algorithms))))
        except (PyJWTError, ValueError, TypeError) as exc:  # a malformed member must not poison the set
            logger.warning("Skipping unusable JWK %r: %s", jwk.get("kid"), exc)
            continue
        kid = jwk.get("kid")
        keys.append(VerificationKey(kid=kid if isinstance(kid, str) else None, key=key.key, algorithms=algorithms))
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
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
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
        """Fetch the JWKS unless a fetch happened within the refresh interval; concurrent callers share one."""
        if self._clock() - self._last_attempt < self.min_refresh_interval:
            return
        async with self._lock:
            # Whoever held the lock may have just fetched: then the keys are as fresh as they get.
            if self._clock() - self._last_attempt < self.min_refresh_interval:
                return
            self._last_attempt = self._clock()
            await self._fetch()

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            async with asyncio.timeout(self.timeout):
                payload = await self._download()
            keys = parse_jwks(payload)
        except (httpx.HTTPError, TimeoutError, msgspec.MsgspecError, ValueError) as exc:
            self.failures += 1
            JWKS_REFRESHES.labels("failed").inc()
            logger.warning("JWKS refresh from %s failed (%s); keeping %d cached keys", self.url, exc, len(self._keys))
            return
        self._keys = tuple(keys)
        self._by_kid = {key.kid: key for key in keys if key.kid is not None}
        self._loaded_at = self._clock()
        JWKS_REFRESHES.labels("loaded").inc()
        logger.info("Loaded %d verification keys from %s", len(keys), self.url)

    async def _download(self) -> bytes:
        client = self._client
        if client is None:
            client = self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        async with client.stream("GET", self.url, headers={"Accept": "application/json"}) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
            return bytes(body)

    def _refresh_in_background_if_stale(self) -> None:
        loaded_at = self._loaded_at
        if loaded_at is None or self._clock() - loaded_at < self.max_age:
            return
        if self._background is None or self._background.done():
            # Revoked keys disappear from the JWKS; re-reading it now and then makes them stop working here.
            self._background = asyncio.create_task(self.refresh())

    async def aclose(self) -> None:
        """Stop any background refresh and close the HTTP client if this cache created it."""
        if self._background is not None and not self._background.done():
            self._background.cancel()
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
