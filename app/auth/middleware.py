"""Authentication middleware: who is calling, from the ``Authorization: Bearer`` token.

It identifies and never rejects: a request without a valid token carries ``user = None`` and the reason,
so the rate limiter (which runs next) can count it against its client address, and the
:func:`~app.auth.guards.require_token` guard answers it 401 before any handler runs.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

from app.auth.tokens import InvalidTokenError, TokenVerifier

__all__ = ("AuthFailure", "BearerAuthMiddleware", "bearer_challenge")

logger = logging.getLogger(__name__)

REALM = "todo-api"


def bearer_challenge(error_description: str | None = None) -> str:
    """The ``WWW-Authenticate`` value (RFC 6750 §3); ``invalid_token`` only when a token was presented."""
    if error_description is None:
        return f'Bearer realm="{REALM}"'
    return f'Bearer realm="{REALM}", error="invalid_token", error_description="{error_description}"'


class AuthFailure(msgspec.Struct, frozen=True):
    """Why a request is not authenticated: no token at all (``reason`` is ``None``) or an invalid one."""

    reason: str | None

    @property
    def detail(self) -> str:
        if self.reason is None:
            return "A bearer token is required: send 'Authorization: Bearer <JWT>'."
        return f"Invalid bearer token: {self.reason}."

    @property
    def challenge(self) -> str:
        return bearer_challenge(self.reason)


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
            return AuthenticationResult(user=None, auth=AuthFailure(reason=None))
        try:
            principal = await self.verifier.verify(token)
        except InvalidTokenError as exc:
            return AuthenticationResult(user=None, auth=AuthFailure(reason=exc.reason))
        except Exception as exc:
            # A token the verifier failed on in a way it did not foresee is still only an invalid token: the
            # request goes on, anonymous, so the limiter counts it and the guard answers 401. (An exception
            # escaping here would skip both and answer 500.)
            logger.warning("Token verification failed unexpectedly: %s", type(exc).__name__)
            return AuthenticationResult(user=None, auth=AuthFailure(reason="malformed token"))
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
