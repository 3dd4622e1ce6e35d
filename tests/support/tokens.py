"""Tokens built by hand, as an attacker would, and the catalogue of tokens the service must refuse.

``REJECTED_TOKENS`` is the contract of tests/test_auth.py (each case with the reason its 401 gives) and the
first sweep of tests/test_hostile_inputs.py (none of them may ever produce a 500).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt

from tests.support.factories import new_user_id
from tests.support.issuer import AUDIENCE, HS_SECRET, ISSUER, SigningKey, mint, new_key

__all__ = ("REJECTED_TOKENS", "TokenBuilder", "b64", "claims", "hs256_by_hand")

TokenBuilder = Callable[[str, dict[str, SigningKey]], str]


def b64(data: bytes) -> str:
    """Unpadded base64url, as JWT segments are encoded."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_by_hand(payload: dict[str, Any], secret: bytes, header: dict[str, Any] | None = None) -> str:
    """HS256 with an arbitrary secret; PyJWT refuses to use a PEM public key as one, an attacker does not."""
    signing_input = (
        f"{b64(json.dumps(header or {'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(payload).encode())}"
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(sub: str, **extra: Any) -> dict[str, Any]:
    """A valid payload for the test issuer, ten minutes to live, with ``extra`` claims on top."""
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
REJECTED_TOKENS: dict[str, tuple[TokenBuilder, str]] = {
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
