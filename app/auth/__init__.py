"""Authentication: verifying bearer tokens (keys, JWKS cache, claims) and tying paths to principals."""

from app.auth.guards import authorize
from app.auth.middleware import AuthFailure, BearerAuthMiddleware
from app.auth.tokens import InvalidTokenError, Principal, TokenVerifier

__all__ = (
    "AuthFailure",
    "BearerAuthMiddleware",
    "InvalidTokenError",
    "Principal",
    "TokenVerifier",
    "authorize",
)
