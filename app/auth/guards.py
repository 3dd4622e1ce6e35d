"""The guard that ties the ``{user_id}`` of a path to the authenticated principal."""

from __future__ import annotations

import logging
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from app.auth.tokens import Principal

__all__ = ("requires_path_owner",)

logger = logging.getLogger(__name__)


async def requires_path_owner(connection: ASGIConnection[Any, Principal, Any, Any], _: BaseRouteHandler) -> None:
    """Allow the request only when the path's ``user_id`` is the token's subject.

    ``async`` on purpose: Litestar runs synchronous guards in a worker thread, a hop per request.
    """
    principal = connection.user
    path_user = connection.path_params.get("user_id")
    if path_user != principal.id:
        logger.warning("Cross-user access refused: subject %r asked for user %r", principal.id, path_user)
        raise PermissionDeniedException("This token does not grant access to another user's tasks.")
