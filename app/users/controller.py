"""HTTP for the caller's account as a whole: take all of it away (export), or have all of it erased."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.db import commit
from app.errors import NotFoundError
from app.observability.audit import audit
from app.openapi import BEARER_SCHEME, problem_responses
from app.tasks.repository import TaskRepository
from app.users.export import EXPORT_BATCH, AccountExport, AccountRead, export_document
from app.users.owner import Owner, provide_owner
from app.users.service import UserProvisioner, UserRepository

__all__ = ("AccountController",)

#: The audit trail names the route, not the user: an erasure must not leave the id it erased behind.
_ERASED_PATH = "/api/{user_id}"


class AccountController(Controller):
    """``/api/{user_id}``: the caller's whole account (else 403)."""

    path = "/api/{user_id:str}"
    tags = ["Account"]
    security = [{BEARER_SCHEME: []}]
    dependencies = {"owner": Provide(provide_owner)}

    @get(
        "/export",
        operation_id="ExportAccount",
        summary="Export everything stored for the user",
        response_headers=[
            ResponseHeader(
                name="Content-Disposition",
                description='`attachment; filename="todo-export.json"`: browsers save it as a file.',
                required=True,
                documentation_only=True,
            )
        ],
        responses={
            200: ResponseSpec(
                AccountExport,
                description="The user and every task, oldest first, as one JSON document (streamed).",
                generate_examples=False,
            ),
            **problem_responses(401, 403, 429, 503),
        },
    )
    async def export_account(
        self,
        request: Request[Principal, Any, Any],
        owner: NamedDependency[Owner],
        db_session: NamedDependency[AsyncSession],
    ) -> Stream:
        """Everything stored for the caller (GDPR article 20): `{"user": {id, email, name, created_at}, "tasks":
        [every task, as the API shows it]}`. Streamed as it is read: any size of account, in constant memory.
        A task changed during the export comes as it was when read."""
        users = UserRepository(db_session)
        user = await users.find(owner.id)
        if user is None:  # erased since the owner's row was provisioned: a fresh, empty account
            await owner.provision_again()
            user = await users.find(owner.id)
            if user is None:  # pragma: no cover - erased once more, between these two statements
                raise NotFoundError
        account = AccountRead(id=user.id, email=user.email, name=user.name, created_at=user.created_at)
        first = await TaskRepository(db_session, owner.id).exported(None, EXPORT_BATCH)
        # The rest is read in sessions of its own: this request's connection goes back to the pool now.
        await db_session.close()
        return Stream(
            export_document(account, first, request.app.state.sessions),
            media_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="todo-export.json"'},
        )

    @delete(
        "/",
        operation_id="EraseAccount",
        summary="Erase the user and everything stored for them",
        status_code=204,
        responses=problem_responses(401, 403, 429, 503),
    )
    async def erase_account(
        self,
        request: Request[Principal, Any, Any],
        owner: NamedDependency[Owner],
        db_session: NamedDependency[AsyncSession],
    ) -> None:
        """Erase the caller (GDPR article 17): the user row, every task, tombstone and idempotency key, in one
        transaction. Repeating it is a 204 too. Open event streams of the user end. A token still valid afterwards
        simply starts a fresh, empty account, as on first contact: call this once the account is gone upstream."""
        erased = await UserRepository(db_session).erase(owner.id)
        await commit(db_session)
        provisioner: UserProvisioner = request.app.state.provisioner
        provisioner.forget(owner.id)
        # Every instance's streams of the user read the feed, find the account gone, and end.
        request.app.state.announce_change(owner.id)
        audit("user.erased", request.scope, path=_ERASED_PATH, tasks=erased or 0)
