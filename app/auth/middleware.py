"""Authentication middleware: a valid ``Authorization: Bearer`` token or a 401, before any handler runs."""

from __future__ import annotations

import logging
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

from app.auth.tokens import InvalidTokenError, TokenVerifier

__all__ = ("BearerAuthMiddleware", "bearer_challenge")

logger = logging.getLogger(__name__)

REALM = "todo-api"


def bearer_challenge(error_description: str | None = None) -> str:
    """The ``WWW-Authenticate`` value (RFC 6750 §3); ``invalid_token`` only when a token was presented."""
    if error_description is None:
        return f'Bearer realm="{REALM}"'
    return f'Bearer realm="{REALM}", error="invalid_token", error_description="{error_description}"'


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Litestar's JWT middleware cannot use a JWKS; this one verifies through :class:`TokenVerifier`.

    Tokens are only read from the ``Authorization`` header: never from the query string (it ends up in
    logs and browser history) nor from cookies (which would reopen CSRF on a bearer-token API).
    """

    def __init__(self, app: ASGIApp, verifier: TokenVerifier, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.verifier = verifier

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        token = _bearer_token(connection.headers.get("authorization"))
        if token is None:
            raise NotAuthorizedException(
                "A bearer token is required: send 'Authorization: Bearer <JWT>'.",
                headers={"WWW-Authenticate": bearer_challenge()},
            )
        try:
            principal = await self.verifier.verify(token)
        except InvalidTokenError as exc:
            logger.info("Rejected bearer token on %s: %s", connection.url.path, exc.reason)
            raise NotAuthorizedException(
                f"Invalid bearer token: {exc.reason}.",
                headers={"WWW-Authenticate": bearer_challenge(exc.reason)},
            ) from None
        return AuthenticationResult(user=principal, auth=token)


def _bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None`` when no token was sent."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None
