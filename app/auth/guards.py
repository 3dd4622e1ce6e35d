"""The guard on every route: a request must be authenticated (401), and the ``{user_id}`` of its path must be
its subject (403).

One guard, registered on the app, so every route is protected unless the authentication middleware skips it
(health, docs), and any route with a ``{user_id}`` is its owner's alone. (One, not two: Litestar copies the
route handler for every guard it calls. ``async``: it runs synchronous guards in a worker thread.)
"""

from __future__ import annotations

from typing import Any, cast

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from app.auth.middleware import AuthFailure

__all__ = ("authorize",)


async def authorize(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """401 without a valid token; 403 when the path's ``user_id`` is not the token's subject."""
    # Typed as always holding "user", but the middleware only sets it on the routes it does not skip
    # (and not for OPTIONS, which answers with what is allowed and touches no data).
    scope = cast("dict[str, Any]", connection.scope)
    if "user" not in scope:
        return
    user = scope["user"]
    if user is None:
        failure = scope.get("auth")
        failure = failure if isinstance(failure, AuthFailure) else AuthFailure(reason=None)
        raise NotAuthorizedException(failure.detail, headers={"WWW-Authenticate": failure.challenge})
    path_user = connection.path_params.get("user_id")
    if path_user is not None and path_user != user.id:
        raise PermissionDeniedException("This token does not grant access to another user's tasks.")
