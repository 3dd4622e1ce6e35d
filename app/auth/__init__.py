"""Authentication: verifying bearer tokens (keys, JWKS cache, claims) into principals, and requiring one."""

from app.auth.guards import require_token
from app.auth.middleware import AuthFailure, BearerAuthMiddleware
from app.auth.tokens import InvalidTokenError, Principal, TokenVerifier

__all__ = (
    "AuthFailure",
    "BearerAuthMiddleware",
    "InvalidTokenError",
    "Principal",
    "TokenVerifier",
    "require_token",
)
