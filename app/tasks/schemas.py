"""What the task endpoints accept and return. The OpenAPI schema is generated from these types."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from uuid import UUID

import msgspec
from litestar.dto import MsgspecDTO
from litestar.exceptions import HTTPException
from litestar.typing import FieldDefinition

from app.errors import FieldSource, InvalidFieldError
from app.models import DESCRIPTION_MAX_LENGTH, TITLE_MAX_LENGTH

__all__ = (
    "NO_NUL_PATTERN",
    "PATTERN_EXPLANATIONS",
    "PRIORITIES",
    "PRIORITY_RANKS",
    "SEARCH_MAX_LENGTH",
    "ChangeFeed",
    "CompletionChange",
    "Priority",
    "StrictJSON",
    "TaskChange",
    "TaskCreate",
    "TaskDeletion",
    "TaskMove",
    "TaskRead",
    "TaskSort",
    "TaskUpdate",
    "TaskUpsert",
    "TasksDeleted",
    "TasksUpdated",
)

T = TypeVar("T", bound=msgspec.Struct)

SEARCH_MAX_LENGTH = 200
# PostgreSQL text cannot hold NUL characters, so they are refused here instead of failing in the database.
NO_NUL_PATTERN = r"^[^\x00]*$"
# Whitespace spelled out as ECMAScript's \s defines it: Python's \s also counts \x1c-\x1f, so with \s a title
# the published JSON Schema accepts could be refused here (Schemathesis found one).
_WHITESPACE = r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
TITLE_PATTERN = rf"^[^\x00]*[^\x00{_WHITESPACE}][^\x00]*$"
#: Each pattern above in words, for validation errors (create_app hands them to app/errors.py): msgspec's own
#: message only quotes the regex.
PATTERN_EXPLANATIONS: Mapping[str, str] = {
    NO_NUL_PATTERN: "Must not contain NUL characters.",
    TITLE_PATTERN: "Must contain a non-whitespace character and no NUL characters.",
}

Title = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=TITLE_MAX_LENGTH,
        pattern=TITLE_PATTERN,
        description=f"1-{TITLE_MAX_LENGTH} characters, not only whitespace, no NUL characters.",
        examples=["Buy milk"],
    ),
]
Description = Annotated[
    str,
    msgspec.Meta(
        max_length=DESCRIPTION_MAX_LENGTH,
        pattern=NO_NUL_PATTERN,
        description=f"Up to {DESCRIPTION_MAX_LENGTH} characters, no NUL characters.",
        examples=["Two litres, semi-skimmed"],
    ),
]
DueAt = Annotated[
    datetime,
    msgspec.Meta(
        tz=True,
        description="RFC 3339 date-time with an offset (a time without one is refused); returned in UTC.",
        examples=["2026-12-24T18:00:00+01:00"],
    ),
]
Priority = Literal["none", "low", "medium", "high"]
#: Each priority as stored: a number, so that the database sorts them in this order.
PRIORITY_RANKS: Mapping[str, int] = {"none": 0, "low": 1, "medium": 2, "high": 3}
PRIORITIES: tuple[Priority, ...] = ("none", "low", "medium", "high")
TaskSort = Literal[
    "created_at",
    "-created_at",
    "updated_at",
    "-updated_at",
    "title",
    "-title",
    "position",
    "due_at",
    "-due_at",
    "priority",
    "-priority",
]


class TaskCreate(msgspec.Struct, kw_only=True):
    """A new task. Unknown fields (``id``, ``user_id``, timestamps…) are ignored."""

    title: Title
    description: Description | None = None
    completed: bool = False
    due_at: DueAt | None = None
    priority: Priority = "none"
    after: UUID | None = None
    """Place the new task right after this one in the manual order; by default it goes first."""


class TaskUpdate(msgspec.Struct, kw_only=True):
    """A partial update: only the fields present change; ``description: null`` clears the description."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    completed: bool | msgspec.UnsetType = msgspec.UNSET
    due_at: DueAt | msgspec.UnsetType | None = msgspec.UNSET
    priority: Priority | msgspec.UnsetType = msgspec.UNSET

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, by column name, as stored (a priority as its rank)."""
        sent = {name: value for name in self.__struct_fields__ if (value := getattr(self, name)) is not msgspec.UNSET}
        if "priority" in sent:
            sent["priority"] = PRIORITY_RANKS[sent["priority"]]
        return sent


class TaskRead(msgspec.Struct, kw_only=True):
    """A task as the API returns it; timestamps are ISO 8601 in UTC with an explicit offset."""

    id: UUID
    user_id: str
    title: str
    description: str | None
    completed: bool
    created_at: datetime
    updated_at: datetime
    due_at: datetime | None
    priority: Priority
    position: str
    """The task's place in the user's manual order (`sort=position`): compare as strings; set by the server."""
    revision: int
    """The owner's revision at this task's last change (the change feed's order)."""

    @classmethod
    def from_row(cls, task: Any) -> TaskRead:
        """Copy a row (or any object with these attributes) into the response type."""
        return cls(
            id=task.id,
            user_id=task.user_id,
            title=task.title,
            description=task.description,
            completed=task.completed,
            created_at=task.created_at,
            updated_at=task.updated_at,
            due_at=task.due_at,
            priority=PRIORITIES[task.priority],
            position=task.position,
            revision=task.revision,
        )


class TaskUpsert(msgspec.Struct, kw_only=True, tag="upsert", tag_field="op"):
    """A task created or changed: its state as of ``revision`` (the latest; each task appears once)."""

    revision: int
    task: TaskRead


class TaskDeletion(msgspec.Struct, kw_only=True, tag="delete", tag_field="op"):
    """A task deleted at ``revision`` (a tombstone, kept SYNC_TOMBSTONE_RETENTION_DAYS)."""

    revision: int
    id: UUID
    deleted_at: datetime


TaskChange = TaskUpsert | TaskDeletion


class ChangeFeed(msgspec.Struct, kw_only=True):
    """Changes after ``since``, oldest first. Send ``revision`` as the next ``since``; ``has_more``: ask again
    at once for the next page."""

    changes: list[TaskChange]
    revision: int
    has_more: bool


class TaskMove(msgspec.Struct, kw_only=True):
    """Where a task goes in the manual order: right after the task ``after``, or first when it is ``null``."""

    after: UUID | None


class CompletionChange(msgspec.Struct, kw_only=True):
    """Set ``completed`` on every task of the caller ("toggle all")."""

    completed: bool


class TasksUpdated(msgspec.Struct, kw_only=True):
    """How many tasks a bulk update changed (tasks already so are not changes) and the revision it reached."""

    updated: int
    revision: int


class TasksDeleted(msgspec.Struct, kw_only=True):
    """How many tasks a bulk delete removed and the revision it reached."""

    deleted: int
    revision: int


def _refuse_duplicate_keys(body: bytes) -> None:
    """Refuse ``{"title": "a", "title": "b"}``: parsers disagree on which one wins, so neither may.

    msgspec keeps the last silently; the standard library's parser reports every object's pairs. The check is
    linear in the body (a set per object), and numbers and constants are not converted: only keys matter here,
    and ``int()`` of a 60 000-digit number is both slow and refused by Python's digit limit.
    """

    def check(pairs: list[tuple[str, Any]]) -> None:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise msgspec.DecodeError(f"duplicate key {key[:80]!r}")
            seen.add(key)

    json.loads(body, object_pairs_hook=check, parse_int=_ignore, parse_float=_ignore, parse_constant=_ignore)


def _ignore(_: str) -> None:
    return None


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


class StrictJSON(MsgspecDTO[T], Generic[T]):
    """Decodes a JSON body straight into its Struct with msgspec's strict type rules.

    Litestar's default body parsing converts leniently (``"completed": "true"`` would become ``True``);
    an API contract with typed fields must refuse that with a 422 instead. The OpenAPI schema is the
    Struct's own, so its constraints stay documented.
    """

    def decode_bytes(self, value: bytes) -> Any:
        content_type = self.asgi_connection.headers.get("content-type")
        if content_type is not None and not _is_json(content_type):
            raise HTTPException(status_code=415, detail=f"Send the body as application/json, not {content_type[:80]}.")
        try:
            decoded = msgspec.json.decode(value, type=self.model_type)
            _refuse_duplicate_keys(value)
        except UnicodeDecodeError as exc:
            # msgspec lets invalid UTF-8 inside strings escape as a UnicodeDecodeError; it is malformed JSON.
            raise msgspec.DecodeError(f"invalid UTF-8 at byte {exc.start}") from None
        except RecursionError:
            raise msgspec.DecodeError("nested too deeply") from None
        return decoded

    @classmethod
    def create_openapi_schema(cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any) -> Any:
        return schema_creator.for_field_definition(FieldDefinition.from_annotation(cls.model_type))


def check_in_utc_range(moment: datetime | None, field: str, source: FieldSource) -> None:
    """422 naming ``field`` unless ``moment`` is an instant Python can hold in UTC: an offset can carry a date-time
    of year 1 or 9999 past the years ``datetime`` has, and every due date is compared and stored in UTC."""
    if moment is None:
        return
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise InvalidFieldError(field, "The date-time is outside the years 1 to 9999 once in UTC.", source) from None
