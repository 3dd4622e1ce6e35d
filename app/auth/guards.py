"""Guards: a request must be authenticated (401), and the ``{user_id}`` of its path must be its subject (403)."""

from __future__ import annotations

from typing import Any, cast

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from app.auth.middleware import AuthFailure
from app.auth.tokens import Principal

__all__ = ("requires_authentication", "requires_path_owner")

# Both guards are ``async`` on purpose: Litestar runs synchronous guards in a worker thread, a hop per request.


async def requires_authentication(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Registered on the app, so every route is protected unless the authentication middleware skips it."""
    # Typed as always holding "user", but the middleware only sets it on the routes it does not skip.
    scope = cast("dict[str, Any]", connection.scope)
    if "user" not in scope:
        return  # a route excluded from authentication (health, docs)
    if scope["user"] is None:
        failure = scope.get("auth")
        failure = failure if isinstance(failure, AuthFailure) else AuthFailure(reason=None)
        raise NotAuthorizedException(failure.detail, headers={"WWW-Authenticate": failure.challenge})


async def requires_path_owner(connection: ASGIConnection[Any, Principal, Any, Any], _: BaseRouteHandler) -> None:
    """Allow the request only when the path's ``user_id`` is the token's subject."""
    if "user" not in cast("dict[str, Any]", connection.scope):
        return  # OPTIONS: the method answers with what is allowed and touches no data
    if connection.path_params.get("user_id") != connection.user.id:
        raise PermissionDeniedException("This token does not grant access to another user's tasks.")
