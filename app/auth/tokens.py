"""Verifying bearer tokens into a :class:`Principal`.

The token's header never picks the verification path on its own: HMAC algorithms are only tried with the
shared secret and asymmetric ones only with JWKS keys that declare (or, by key type, permit) that
algorithm. ``alg: none`` and every algorithm outside those two lists are refused before any crypto runs.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Callable
from itertools import islice
from typing import Any

import jwt
import msgspec
from jwt.types import Options

from app.auth.keys import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, JWKSCache, VerificationKey
from app.config import Settings
from app.models import EMAIL_MAX_LENGTH, NAME_MAX_LENGTH, USER_ID_MAX_LENGTH

__all__ = ("InvalidTokenError", "Principal", "TokenVerifier")

logger = logging.getLogger(__name__)

#: Far above any real JWT (Better Auth's are < 1 KiB); refuse larger ones before parsing them.
MAX_TOKEN_LENGTH = 8192
#: Verified tokens remembered at once: about one per active user in a token's lifetime (15 minutes by default).
MAX_REMEMBERED_TOKENS = 50_000


class Principal(msgspec.Struct, frozen=True):
    """The authenticated caller, as the token's issuer describes them."""

    id: str
    email: str | None = None
    name: str | None = None


class _Verified(msgspec.Struct, frozen=True):
    """A verified token's outcome and the window in which it stays valid (leeway included)."""

    principal: Principal
    valid_from: float
    valid_until: float
    key: VerificationKey | None  # None: the shared secret, which cannot change while the process runs

    def still_valid(self, now: float, jwks: JWKSCache | None) -> bool:
        """Expiry is enforced to the second, and a key gone from the JWKS takes its tokens with it."""
        if not self.valid_from <= now < self.valid_until:
            return False
        return self.key is None or (jwks is not None and jwks.holds(self.key))


class InvalidTokenError(Exception):
    """A bearer token was presented but cannot be accepted; ``reason`` is safe to show and to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenVerifier:
    """Checks signature, algorithm, expiry, not-before, issuer and audience; then reads the principal."""

    def __init__(
        self,
        *,
        secret: str | None,
        jwks: JWKSCache | None,
        issuer: str | None,
        audience: str | None,
        leeway: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._clock = clock
        # exp, nbf and iat are checked against our clock (_check_validity_window): PyJWT would read the system's.
        self._options: Options = {
            "require": ["exp", "sub"],
            "verify_aud": audience is not None,
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
        }
        # Verifying an EdDSA signature costs more than the rest of a request's authentication together; a
        # token already verified is re-checked for expiry (and its key for revocation) only.
        self._verified: dict[str, _Verified] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """Build the verifier the settings describe (either key source, both, or neither)."""
        jwks_url = settings.jwks_url
        jwks = (
            JWKSCache(
                jwks_url,
                timeout=settings.jwt_jwks_timeout_seconds,
                min_refresh_interval=settings.jwt_jwks_min_refresh_interval_seconds,
                max_age=settings.jwt_jwks_max_age_seconds,
            )
            if jwks_url is not None
            else None
        )
        return cls(
            secret=settings.jwt_secret,
            jwks=jwks,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            leeway=settings.jwt_leeway_seconds,
        )

    @property
    def configured(self) -> bool:
        """Whether any key source exists; without one no token can ever be accepted."""
        return self.secret is not None or self.jwks is not None

    async def verify(self, token: str) -> Principal:
        """Return the principal of a valid token or raise :class:`InvalidTokenError` saying why not."""
        remembered = self._verified.get(token)
        if remembered is not None:
            if remembered.still_valid(self._clock(), self.jwks):
                return remembered.principal
            del self._verified[token]  # expired or its key was revoked: verify again for the precise reason
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidTokenError("token too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            # Not only DecodeError: PyJWT validates the header too (``crit``, a non-string ``kid``…).
            raise InvalidTokenError("malformed token") from None
        algorithm = header.get("alg")
        kid = header.get("kid")
        if not isinstance(algorithm, str) or (kid is not None and not isinstance(kid, str)):
            raise InvalidTokenError("malformed token header")

        keys = await self._keys_for(algorithm, kid)
        claims, key = self._decode(token, algorithm, keys)
        _check_validity_window(claims, self._clock(), self.leeway)
        _check_numeric_dates(claims)
        principal = _principal_from(claims)
        self._remember(token, principal, claims, key)
        return principal

    def seconds_left(self, token: str) -> float:
        """Seconds until ``token``, just accepted by :meth:`verify`, stops being accepted (``exp`` plus the leeway),
        for a response that outlives its request and must end with its token (an event stream). 0 for a token not
        remembered (never accepted, or forgotten since)."""
        remembered = self._verified.get(token)
        return 0.0 if remembered is None else remembered.valid_until - self._clock()

    def _remember(self, token: str, principal: Principal, claims: dict[str, Any], key: VerificationKey | None) -> None:
        """Keep a verified token's outcome until it expires, so its next request skips the signature check."""
        if len(self._verified) >= MAX_REMEMBERED_TOKENS:
            # Oldest first: dicts keep insertion order.
            for stale in list(islice(self._verified, MAX_REMEMBERED_TOKENS // 10)):
                del self._verified[stale]
        # _check_numeric_dates has bounded these, so float() cannot overflow.
        lower = max((float(claims[c]) for c in ("nbf", "iat") if c in claims), default=0.0)
        self._verified[token] = _Verified(
            principal=principal,
            valid_from=lower - self.leeway,
            valid_until=float(claims["exp"]) + self.leeway,
            key=key,
        )

    async def _keys_for(self, algorithm: str, kid: str | None) -> list[VerificationKey | str]:
        if algorithm in HMAC_ALGORITHMS:
            if self.secret is None:
                raise InvalidTokenError("algorithm not allowed")
            return [self.secret]
        if algorithm in ASYMMETRIC_ALGORITHMS:
            if self.jwks is None:
                raise InvalidTokenError("algorithm not allowed")
            found: list[VerificationKey] = await self.jwks.candidates(kid, algorithm)
            if not found:
                raise InvalidTokenError("unknown signing key")
            return list(found)
        raise InvalidTokenError("algorithm not allowed")

    def _decode(
        self, token: str, algorithm: str, keys: list[VerificationKey | str]
    ) -> tuple[dict[str, Any], VerificationKey | None]:
        failure: InvalidTokenError | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key=key.key if isinstance(key, VerificationKey) else key,  # type: ignore[arg-type]
                    algorithms=[algorithm],
                    issuer=self.issuer,
                    audience=self.audience,
                    options=self._options,
                )
                return claims, key if isinstance(key, VerificationKey) else None
            except jwt.InvalidSignatureError:
                failure = InvalidTokenError("invalid signature")
            except jwt.InvalidIssuerError:
                raise InvalidTokenError("invalid issuer") from None
            except jwt.InvalidAudienceError:
                raise InvalidTokenError("invalid audience") from None
            except jwt.MissingRequiredClaimError as exc:
                raise InvalidTokenError(f"missing claim {exc.claim}") from None
            except jwt.InvalidKeyError:
                failure = InvalidTokenError("key does not match algorithm")
            except jwt.PyJWTError:
                raise InvalidTokenError("malformed token") from None
            except (ValueError, TypeError, OverflowError):
                # Claims PyJWT converts before comparing (``exp: 1e400`` is infinity to ``int()``): a token
                # nobody could have meant, not a server error.
                raise InvalidTokenError("malformed token") from None
        raise failure or InvalidTokenError("invalid signature")


def _check_validity_window(claims: dict[str, Any], now: float, leeway: int) -> None:
    """``iat`` and ``nbf`` not in the future and ``exp`` not past, at ``now``, give or take ``leeway``.

    PyJWT's own checks, in its order and with its reading of each claim (``int()``), but against the verifier's
    clock instead of the system's.
    """
    for name in ("iat", "nbf", "exp"):
        if name not in claims:
            continue
        try:
            moment = int(claims[name])
        except (ValueError, TypeError, OverflowError):
            raise InvalidTokenError("malformed token") from None
        if name == "exp" and moment <= now - leeway:
            raise InvalidTokenError("token expired")
        if name != "exp" and moment > now + leeway:
            raise InvalidTokenError("token not yet valid")


#: NumericDate claims (RFC 7519 §2) and the range accepted: up to the end of year 9999, as datetime allows.
_NUMERIC_DATES = ("exp", "nbf", "iat")
_LATEST_NUMERIC_DATE = 253_402_300_799


def _check_numeric_dates(claims: dict[str, Any]) -> None:
    """Refuse NumericDate claims that are not JSON numbers in range.

    PyJWT converts with ``int()``, so it accepts ``"exp": "1900000000"`` (a string) and ``true``; and a value
    such as ``10**400`` passes its comparison but cannot be held as a float.
    """
    for name in _NUMERIC_DATES:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidTokenError(f"invalid claim {name}")
        if not -_LATEST_NUMERIC_DATE <= value <= _LATEST_NUMERIC_DATE:  # also refuses NaN
            raise InvalidTokenError(f"invalid claim {name}")


def _clean(value: object, limit: int) -> str | None:
    """A claim as storable text, or ``None`` if it is not a usable string."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > limit or any(unicodedata.category(ch) == "Cc" for ch in value):
        return None
    return value


def _principal_from(claims: dict[str, Any]) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > USER_ID_MAX_LENGTH:
        raise InvalidTokenError("invalid subject")
    if any(unicodedata.category(ch) in {"Cc", "Zs", "Zl", "Zp"} or ch == "/" for ch in subject):
        # The subject appears in URL paths; whitespace, separators and control characters cannot.
        raise InvalidTokenError("invalid subject")
    return Principal(
        id=subject,
        email=_clean(claims.get("email"), EMAIL_MAX_LENGTH),
        name=_clean(claims.get("name"), NAME_MAX_LENGTH),
    )
