"""Authentication: verifying bearer tokens (keys, JWKS cache, claims) and tying paths to principals."""

from app.auth.guards import requires_path_owner
from app.auth.middleware import BearerAuthMiddleware
from app.auth.tokens import InvalidTokenError, Principal, TokenVerifier

__all__ = ("BearerAuthMiddleware", "InvalidTokenError", "Principal", "TokenVerifier", "requires_path_owner")
