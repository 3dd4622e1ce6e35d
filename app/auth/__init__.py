"""Authentication: verifying bearer tokens (keys, JWKS cache, claims) and tying paths to principals."""

from app.auth.guards import requires_authentication, requires_path_owner
from app.auth.middleware import AuthFailure, BearerAuthMiddleware
from app.auth.tokens import InvalidTokenError, Principal, TokenVerifier

__all__ = (
    "AuthFailure",
    "BearerAuthMiddleware",
    "InvalidTokenError",
    "Principal",
    "TokenVerifier",
    "requires_authentication",
    "requires_path_owner",
)
