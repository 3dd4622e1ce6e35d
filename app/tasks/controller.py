"""HTTP for tasks: translate requests into :class:`TaskService` calls and results back into responses."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Annotated, Any, cast
from urllib.parse import quote, urlencode
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIFormat
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.config import Settings
from app.errors import InvalidFieldError
from app.etags import etag_for, if_match_versions, if_none_match_holds
from app.idempotency import (
    IDEMPOTENCY_KEY_HEADER,
    REPLAYED_HEADER,
    Idempotency,
    IdempotencyKeyHeader,
    IdempotencyStore,
    parse_key,
)
from app.observability.metrics import CHANGE_FEED_REQUESTS
from app.openapi import BEARER_SCHEME, problem_responses
from app.tasks.cursor import CURSOR_KEY, CURSOR_PATTERN, MAX_CURSOR_LENGTH, CursorCodec
from app.tasks.repository import TaskFilters, TaskRow
from app.tasks.schemas import (
    NO_NUL_PATTERN,
    PRIORITY_RANKS,
    SEARCH_MAX_LENGTH,
    ChangeFeed,
    CompletionChange,
    Priority,
    StrictJSON,
    TaskCreate,
    TaskMove,
    TaskRead,
    TasksDeleted,
    TaskSort,
    TasksUpdated,
    TaskUpdate,
    check_in_utc_range,
)
from app.tasks.service import RevisionExpiredError, TaskService
from app.users.owner import Owner, provide_owner

__all__ = ("TaskController",)

_FEED_FULL = CHANGE_FEED_REQUESTS.labels(outcome="full")
_FEED_INCREMENTAL = CHANGE_FEED_REQUESTS.labels(outcome="incremental")
_FEED_EXPIRED = CHANGE_FEED_REQUESTS.labels(outcome="expired")

#: Far beyond any real list, and well inside the 64-bit OFFSET both databases take.
MAX_OFFSET = 2_147_483_647
#: Far beyond any user's revisions, and exact in a JavaScript number (and in a JSON Schema bound read as a double).
MAX_REVISION = 2**53 - 1
Since = Annotated[
    int,
    QueryParameter(
        ge=0,
        le=MAX_REVISION,
        description="The `revision` of the last response applied; 0 for a full sync (every live task).",
    ),
]
ETAG_HEADER = ResponseHeader(
    name="ETag",
    description="The task's version; send it back in `If-Match` to update safely.",
    required=True,
    documentation_only=True,
)
REPLAYED = ResponseHeader(
    name=REPLAYED_HEADER,
    description="`true`: the stored response to an earlier request with this `Idempotency-Key`; nothing was written.",
    documentation_only=True,
)
IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description="Apply only if the task still has this ETag (else 412). Without it, the last write wins.",
    ),
]
IfNoneMatch = Annotated[
    str | None, HeaderParameter(name="If-None-Match", description="Answer 304 if the task still has this ETag.")
]


async def provide_tasks(
    request: Request[Principal, Any, Any], owner: NamedDependency[Owner], db_session: NamedDependency[AsyncSession]
) -> TaskService:
    """The owner's task service (the owner dependency has checked the path and provisioned the row)."""
    settings: Settings = request.app.state.settings
    return TaskService(
        db_session,
        owner.id,
        max_tasks=settings.max_tasks_per_user,
        provision_owner_again=owner.provision_again,
        announce=request.app.state.announce_change,
    )


async def provide_idempotency(
    request: Request[Principal, Any, Any],
    tasks: NamedDependency[TaskService],
    idempotency_key: IdempotencyKeyHeader = None,
) -> Idempotency:
    """The write's ``Idempotency-Key`` (422 if malformed), kept with the owner's tasks in the task service's session,
    so that the key and the write share one transaction. Built on ``tasks`` rather than beside it: Litestar resolves
    sibling dependencies concurrently in a task group, a cost every write would pay (see app/users/owner.py)."""
    key = None if idempotency_key is None else parse_key(request.headers.getall(IDEMPOTENCY_KEY_HEADER))
    settings: Settings = request.app.state.settings
    return Idempotency(
        key,
        request,
        IdempotencyStore(tasks.session, tasks.owner_id),
        retention=timedelta(hours=settings.idempotency_key_retention_hours),
        lock_wait=Idempotency.lock_wait_for(settings.database_statement_timeout),
        provision_owner_again=tasks.provision_owner_again,
    )


class TaskController(Controller):
    """``/api/{user_id}/tasks``: every handler works through ``tasks``, built on the path's owner (else 403)."""

    path = "/api/{user_id:str}/tasks"
    tags = ["Tasks"]
    security = [{BEARER_SCHEME: []}]
    dependencies = {
        "owner": Provide(provide_owner),
        "tasks": Provide(provide_tasks),
        "idempotency": Provide(provide_idempotency),
    }

    @get(
        "/",
        operation_id="ListTasks",
        summary="List tasks",
        response_headers=[
            ResponseHeader(
                name="X-Total-Count",
                description="Tasks matching the filters, all pages together.",
                required=True,
                documentation_only=True,
            ),
            ResponseHeader(
                name="Link",
                description=(
                    'While more tasks follow: `<URL of the next page>; rel="next"` (RFC 8288), the same listing with'
                    " an opaque `cursor`. Absent on the last page."
                ),
                documentation_only=True,
            ),
        ],
        responses=problem_responses(401, 403, 422, 429, 503),
    )
    async def list_tasks(
        self,
        request: Request[Principal, Any, Any],
        tasks: NamedDependency[TaskService],
        completed: Annotated[bool | None, QueryParameter(description="Only completed (true) or open (false).")] = None,
        q: Annotated[
            str | None,
            QueryParameter(
                max_length=SEARCH_MAX_LENGTH,
                pattern=NO_NUL_PATTERN,
                description="Case-insensitive search in title and description.",
            ),
        ] = None,
        sort: Annotated[
            TaskSort, QueryParameter(description="Field to sort by; prefix `-` for descending.")
        ] = "-created_at",
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="Page size.")] = 1000,
        offset: Annotated[
            int, QueryParameter(ge=0, le=MAX_OFFSET, description="Tasks to skip (not with `cursor`).")
        ] = 0,
        cursor: Annotated[
            str | None,
            QueryParameter(
                min_length=1,
                max_length=MAX_CURSOR_LENGTH,
                pattern=CURSOR_PATTERN,
                description=(
                    'The next page: take it from the previous page\'s `Link: <…>; rel="next"`, with the same'
                    " `sort` and filters (else 422). Opaque; it does not expire."
                ),
            ),
        ] = None,
        due_before: Annotated[
            str | None,
            QueryParameter(
                format=OpenAPIFormat.DATE_TIME, description="Only tasks due before this RFC 3339 date-time."
            ),
        ] = None,
        due_after: Annotated[
            str | None,
            QueryParameter(format=OpenAPIFormat.DATE_TIME, description="Only tasks due after this RFC 3339 date-time."),
        ] = None,
        overdue: Annotated[
            bool, QueryParameter(description="`true`: only tasks due in the past and not completed.")
        ] = False,
        priority: Annotated[Priority | None, QueryParameter(description="Only tasks of this priority.")] = None,
    ) -> Response[list[TaskRead]]:
        """The caller's tasks, newest first unless `sort` says otherwise. `X-Total-Count` carries the total.
        Filters combine; tasks without a due date sort last by `due_at` in either direction.

        Pages: follow `Link: rel="next"` until it is absent. A walk by cursor never misses a task that exists
        throughout it, whatever is created, changed or deleted meanwhile. A task unchanged during the walk comes
        exactly once, in order. A task changed during the walk can come once more, in its newer state, at the
        start of a later page: keep tasks by `id`."""
        _check_whole_numbers(request, "limit", "offset")
        filters = TaskFilters(
            completed=completed,
            search=q,
            due_before=_moment("due_before", due_before),
            due_after=_moment("due_after", due_after),
            overdue=overdue,
            priority=None if priority is None else PRIORITY_RANKS[priority],
        )
        codec: CursorCodec | None = None
        if cursor is None:
            page = await tasks.list(filters, sort=sort, limit=limit, offset=offset)
        elif offset:
            raise InvalidFieldError(
                "offset", "A cursor says where the page starts: send `offset` or `cursor`, not both."
            )
        else:
            codec = await _cursor_codec(request, tasks, sort, filters)
            page = await tasks.list(filters, sort=sort, limit=limit, cursor=codec.decode(cursor))
        headers = {"X-Total-Count": str(page.total)}
        if page.next is not None:
            codec = codec or await _cursor_codec(request, tasks, sort, filters)
            headers["Link"] = f'<{_next_page_url(request, tasks.owner_id, codec.encode(page.next))}>; rel="next"'
        return Response([TaskRead.from_row(row) for row in page.tasks], headers=headers)

    @post(
        "/",
        operation_id="CreateTask",
        summary="Create a task",
        dto=StrictJSON[TaskCreate],
        return_dto=None,
        response_headers=[
            ResponseHeader(name="Location", description="URL of the new task.", required=True, documentation_only=True),
            ETAG_HEADER,
            REPLAYED,
        ],
        responses=problem_responses(401, 403, 409, 413, 415, 422, 429, 503),
    )
    async def create_task(
        self,
        request: Request[Principal, Any, Any],
        tasks: NamedDependency[TaskService],
        idempotency: NamedDependency[Idempotency],
        data: JSONBody[TaskCreate],
    ) -> Response[TaskRead]:
        """Create a task owned by the caller. `id`, `user_id` and timestamps in the body are ignored."""
        check_in_utc_range(data.due_at, "due_at", "body")

        async def create() -> Response[TaskRead]:
            task = await tasks.create(data)
            # Built from the owner's id, percent-encoded as a path segment (RFC 3986 §3.3), never from the decoded
            # request path: a user id may hold any character, and nothing after the commit may fail.
            location = f"{request.scope.get('root_path', '')}/api/{quote(task.user_id, safe='')}/tasks/{task.id}"
            return _task_response(task, status_code=201, headers={"Location": location})

        return await idempotency.respond(create)

    @get(
        "/changes",
        operation_id="ListTaskChanges",
        summary="Changes since a revision",
        responses=problem_responses(401, 403, 410, 422, 429, 503),
    )
    async def list_changes(
        self,
        request: Request[Principal, Any, Any],
        tasks: NamedDependency[TaskService],
        since: Since = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="Most changes in one page.")] = 1000,
    ) -> ChangeFeed:
        """The caller's changes after `since`, oldest first, each task once in its latest state; deletions as
        tombstones. Send the response's `revision` as the next `since`; while `has_more`, ask again at once."""
        _check_whole_numbers(request, "since", "limit")
        try:
            feed = await tasks.changes(since, limit)
        except RevisionExpiredError:
            _FEED_EXPIRED.inc()
            raise
        (_FEED_FULL if since == 0 else _FEED_INCREMENTAL).inc()
        return feed

    @patch(
        "/",
        operation_id="SetAllTasksCompleted",
        summary="Complete or reopen every task",
        dto=StrictJSON[CompletionChange],
        return_dto=None,
        response_headers=[REPLAYED],
        responses=problem_responses(401, 403, 409, 413, 415, 422, 429, 503),
    )
    async def set_all_completed(
        self,
        tasks: NamedDependency[TaskService],
        idempotency: NamedDependency[Idempotency],
        data: JSONBody[CompletionChange],
    ) -> TasksUpdated:
        """Set `completed` on every task of the caller ("toggle all"), in one atomic statement. Tasks already so
        are left alone; each changed task takes a revision of its own and appears in the change feed."""
        return await idempotency.respond(lambda: tasks.set_all_completed(data.completed))

    @delete(
        "/",
        operation_id="DeleteCompletedTasks",
        summary="Delete completed tasks",
        status_code=200,
        response_headers=[REPLAYED],
        responses=problem_responses(401, 403, 409, 422, 429, 503),
    )
    async def delete_completed(
        self,
        tasks: NamedDependency[TaskService],
        idempotency: NamedDependency[Idempotency],
        completed: Annotated[
            bool,
            QueryParameter(
                description="Must be `true`: only completed tasks are ever deleted in bulk.",
                schema_extra={"enum": [True]},
            ),
        ],
    ) -> TasksDeleted:
        """Delete the caller's completed tasks ("clear completed") in one atomic statement; each leaves a
        tombstone in the change feed. Without `completed=true`, 422: never everything by accident."""
        if not completed:
            raise InvalidFieldError("completed", "Only completed=true is accepted: bulk delete clears completed tasks.")
        return await idempotency.respond(tasks.delete_completed)

    @get(
        "/{task_id:str}",
        operation_id="GetTask",
        summary="Get a task",
        response_headers=[ETAG_HEADER],
        responses={
            304: ResponseSpec(None, description="`If-None-Match` names the current ETag: the cached copy is current."),
            **problem_responses(401, 403, 404, 422, 429, 503),
        },
    )
    async def get_task(
        self, tasks: NamedDependency[TaskService], task_id: FromPath[UUID], if_none_match: IfNoneMatch = None
    ) -> Response[TaskRead]:
        """One of the caller's tasks; `If-None-Match` with its current ETag gives 304 without a body."""
        task = await tasks.get(task_id)
        if if_none_match_holds(if_none_match, task.version):
            # A 304 has no body; the annotation describes the 200 for the OpenAPI document.
            return cast("Response[TaskRead]", Response(None, status_code=304, headers={"ETag": etag_for(task.version)}))
        return _task_response(task)

    @put(
        "/{task_id:str}",
        operation_id="UpdateTask",
        summary="Update a task",
        dto=StrictJSON[TaskUpdate],
        return_dto=None,
        response_headers=[ETAG_HEADER, REPLAYED],
        responses=problem_responses(401, 403, 404, 409, 412, 413, 415, 422, 429, 503),
    )
    async def update_task(
        self,
        tasks: NamedDependency[TaskService],
        idempotency: NamedDependency[Idempotency],
        task_id: FromPath[UUID],
        data: JSONBody[TaskUpdate],
        if_match: IfMatch = None,
    ) -> Response[TaskRead]:
        """Change only the fields present in the body; `description: null` clears the description."""
        check_in_utc_range(None if data.due_at is msgspec.UNSET else data.due_at, "due_at", "body")
        return await idempotency.respond(lambda: _shown(tasks.update(task_id, data, if_match_versions(if_match))))

    @delete(
        "/{task_id:str}",
        operation_id="DeleteTask",
        summary="Delete a task",
        response_headers=[REPLAYED],
        responses=problem_responses(401, 403, 404, 409, 412, 422, 429, 503),
    )
    async def delete_task(
        self,
        tasks: NamedDependency[TaskService],
        idempotency: NamedDependency[Idempotency],
        task_id: FromPath[UUID],
        if_match: IfMatch = None,
    ) -> None:
        """Delete one of the caller's tasks; 204 with an empty body."""
        return await idempotency.respond(lambda: tasks.delete(task_id, if_match_versions(if_match)))

    @post(
        "/{task_id:str}/move",
        operation_id="MoveTask",
        summary="Move a task in the manual order",
        status_code=200,
        dto=StrictJSON[TaskMove],
        return_dto=None,
        response_headers=[ETAG_HEADER, REPLAYED],
        responses=problem_responses(401, 403, 404, 409, 413, 415, 422, 429, 503),
    )
    async def move_task(
        self,
        tasks: NamedDependency[TaskService],
        idempotency: NamedDependency[Idempotency],
        task_id: FromPath[UUID],
        data: JSONBody[TaskMove],
    ) -> Response[TaskRead]:
        """Place the task right after `after` (`null`: first) in the order `sort=position` lists. Only the moved
        task's `position` changes; it takes a revision like any other write."""
        return await idempotency.respond(lambda: _moved(tasks, task_id, data))

    @patch(
        "/{task_id:str}/complete",
        operation_id="ToggleTaskCompletion",
        summary="Toggle completion",
        response_headers=[ETAG_HEADER, REPLAYED],
        responses=problem_responses(401, 403, 404, 409, 412, 422, 429, 503),
    )
    async def toggle_task(
        self,
        tasks: NamedDependency[TaskService],
        idempotency: NamedDependency[Idempotency],
        task_id: FromPath[UUID],
        if_match: IfMatch = None,
    ) -> Response[TaskRead]:
        """Flip `completed` and return the task."""
        return await idempotency.respond(lambda: _shown(tasks.toggle(task_id, if_match_versions(if_match))))


async def _shown(write: Awaitable[TaskRow]) -> Response[TaskRead]:
    """The task a write returns, shown with its ETag."""
    return _task_response(await write)


async def _moved(tasks: TaskService, task_id: UUID, data: TaskMove) -> Response[TaskRead]:
    return _task_response(await tasks.move(task_id, data.after))


def _check_whole_numbers(request: Request[Any, Any, Any], *names: str) -> None:
    """422 unless each of these integer query parameters, when sent, is sent once and as digits. Litestar's
    conversion takes the last of repeated values and reads ``0.0`` as 0, so ``since=&since=0.0`` was accepted
    (found by the fuzzer): the contract says one whole number."""
    for name in names:
        values = request.query_params.getall(name, [])
        if len(values) > 1:
            raise InvalidFieldError(name, "Send this parameter once.")
        if values and not (values[0].isascii() and values[0].lstrip("-").isdigit()):
            raise InvalidFieldError(name, "Expected a whole number.")


def _moment(name: str, value: str | None) -> datetime | None:
    """A query parameter read as RFC 3339 strictly (msgspec's parser): a date-time with its offset, or 422.
    Litestar's own conversion would take ``0.5`` as a timestamp and a time without offset as local time."""
    if value is None:
        return None
    try:
        moment = msgspec.json.decode(msgspec.json.encode(value), type=datetime)
    except msgspec.ValidationError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidFieldError(name, "Expected an RFC 3339 date-time with its offset, e.g. 2026-12-24T18:00:00Z.")
    check_in_utc_range(moment, name, "query")
    return moment


async def _cursor_codec(
    request: Request[Any, Any, Any], tasks: TaskService, sort: str, filters: TaskFilters
) -> CursorCodec:
    """Cursors of this listing: signed for its owner, sort and filters, so one cannot be spent on another."""
    secret = await request.app.state.signing_keys.get(tasks.session, CURSOR_KEY)
    return CursorCodec(secret, owner_id=tasks.owner_id, sort=sort, listing=filters.listing())


def _next_page_url(request: Request[Any, Any, Any], owner_id: str, cursor: str) -> str:
    """This listing's URL with ``cursor`` in place of any ``offset`` or earlier cursor: a relative reference
    (RFC 3986 §4.2), so it stays right behind a proxy that rewrites the host."""
    kept = [(name, value) for name, value in request.query_params.multi_items() if name not in {"cursor", "offset"}]
    path = f"{request.scope.get('root_path', '')}/api/{quote(owner_id, safe='')}/tasks"
    return f"{path}?{urlencode([*kept, ('cursor', cursor)])}"


def _task_response(task: TaskRow, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[TaskRead]:
    """A single task with its ETag: every response that shows a task carries the version it shows."""
    return Response(
        TaskRead.from_row(task), status_code=status_code, headers={**(headers or {}), "ETag": etag_for(task.version)}
    )
