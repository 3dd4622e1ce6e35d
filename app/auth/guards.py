"""The guard on every route: a request must be authenticated (401).

One guard, registered on the app, so every route is protected unless the authentication middleware skips it
(health, docs). Which user's data a request may reach is decided where that data is scoped: an owner-scoped
route builds on :func:`app.users.owner.provide_owner`, which refuses another user's path (403). (Litestar copies
the route handler for every guard it calls, so there is only this one. ``async``: it runs synchronous guards in
a worker thread.)
"""

from __future__ import annotations

from typing import Any, cast

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

from app.auth.middleware import AuthFailure

__all__ = ("require_token",)


async def require_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """401, with the ``WWW-Authenticate`` challenge, unless the request carries a valid bearer token."""
    # Typed as always holding "user", but the middleware only sets it on the routes it does not skip
    # (and not for OPTIONS, which answers with what is allowed and touches no data).
    scope = cast("dict[str, Any]", connection.scope)
    if "user" not in scope or scope["user"] is not None:
        return
    failure = scope.get("auth")
    failure = failure if isinstance(failure, AuthFailure) else AuthFailure(reason=None)
    raise NotAuthorizedException(failure.detail, headers={"WWW-Authenticate": failure.challenge})
