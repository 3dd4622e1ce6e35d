"""The owner of an ``/api/{user_id}/…`` path: the authenticated user, whose path it must be, with a user row.

:func:`provide_owner` is the one dependency every owner-scoped route builds on. It refuses another user's path
(403) and provisions the caller's row on first contact, so whatever is built from an :class:`Owner` (the task
service) is the caller's own and has a row to hang on.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.params import PathParameter
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.tokens import Principal
from app.errors import DomainError
from app.users.service import UserProvisioner

__all__ = ("ForeignPathError", "Owner", "UserIdPath", "provide_owner")

UserIdPath = Annotated[str, PathParameter(description="The authenticated user's id: must equal the token's `sub`.")]


class ForeignPathError(DomainError):
    """The path names a user other than the token's subject."""

    status_code = 403
    detail = "This token does not grant access to another user's tasks."
    audit_event = "auth.forbidden"


class Owner:
    """The caller, entitled to this path, with a user row (provisioned again on request, see below)."""

    __slots__ = ("_principal", "_provisioner", "_session")

    def __init__(self, principal: Principal, session: AsyncSession, provisioner: UserProvisioner) -> None:
        self._principal = principal
        self._session = session
        self._provisioner = provisioner

    @property
    def id(self) -> str:
        """The user id: the token's subject and the path's ``{user_id}``."""
        return self._principal.id

    async def provision_again(self) -> None:
        """Store the user row again, for a caller that found it gone (deleted behind the service's back)."""
        self._provisioner.forget(self._principal.id)
        await self._provisioner.ensure(self._session, self._principal)


async def provide_owner(
    request: Request[Principal, Any, Any], db_session: NamedDependency[AsyncSession], user_id: UserIdPath
) -> Owner:
    """403 unless the path's ``{user_id}`` is the token's subject; then the caller's row, provisioned."""
    principal = request.user
    if user_id != principal.id:
        raise ForeignPathError(path_user=user_id)
    # The provisioner comes from app state, not as an injected dependency: Litestar resolves sibling
    # dependencies concurrently in a task group, which costs more than everything else this function does.
    provisioner: UserProvisioner = request.app.state.provisioner
    await provisioner.ensure(db_session, principal)
    return Owner(principal, db_session, provisioner)
