"""Test data: accounts with tokens, and a polyfactory factory for the create body."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any

import httpx
from polyfactory import Use
from polyfactory.factories.msgspec_factory import MsgspecFactory

from app.tasks.schemas import TaskCreate


def new_user_id() -> str:
    """A Better Auth style id: 32 random alphanumerics."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


@dataclass(frozen=True)
class Account:
    """A user of the API with a valid token."""

    id: str
    token: str
    email: str | None = None
    name: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def tasks_url(self, *parts: object) -> str:
        return "/".join([f"/api/{self.id}/tasks", *(str(p) for p in parts)])


class TaskCreateFactory(MsgspecFactory[TaskCreate]):
    """Valid create bodies with readable text."""

    title = Use(lambda: TaskCreateFactory.__faker__.sentence(nb_words=4)[:200])
    description = Use(lambda: TaskCreateFactory.__faker__.optional.paragraph(nb_sentences=2))
    completed = Use(lambda: TaskCreateFactory.__random__.random() < 0.3)

    @classmethod
    def json(cls, **overrides: object) -> dict[str, object]:
        """A request body as the client sends it; overrides may also add fields the schema does not know."""
        known = {k: v for k, v in overrides.items() if k in TaskCreate.__struct_fields__}
        task = cls.build(**known)
        body: dict[str, object] = {"title": task.title, "description": task.description, "completed": task.completed}
        return {**body, **overrides}


async def create_task(client: httpx.AsyncClient, account: Account, **body: Any) -> dict[str, Any]:
    """Create a task through the API (factory values for whatever ``body`` leaves out) and return it."""
    response = await client.post(account.tasks_url(), json=TaskCreateFactory.json(**body), headers=account.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())
