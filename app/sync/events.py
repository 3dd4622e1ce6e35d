"""``GET /api/{user_id}/tasks/events``: the caller's task changes, live, as server-sent events.

Everything that can refuse a stream happens here, before its first byte, so a refusal is an ordinary problem
response: 401/403 (the token, the path), 410/422 (the resume point, through the change feed), 429/503 (the
bounds of the hub). The stream itself is :class:`~app.sync.stream.EventStream`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter, QueryParameter
from litestar.types import ASGIApp
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal, TokenVerifier
from app.concurrency import EXEMPT_FROM_CONCURRENCY_LIMIT
from app.errors import InvalidFieldError
from app.openapi import BEARER_SCHEME, problem_responses
from app.sync.stream import RETRY_MILLISECONDS, EventStream
from app.tasks.controller import MAX_REVISION, provide_tasks
from app.tasks.schemas import ChangeFeed
from app.tasks.service import TaskService
from app.users.owner import Owner, provide_owner

if TYPE_CHECKING:
    from app.sync.plugin import LiveEvents

__all__ = ("FEED_PAGE", "EventController")

#: Changes read and written at once; a catch-up of more goes page by page, each page one write to the client.
FEED_PAGE = 500

# Parsed here rather than typed ``int``: Litestar's own validation error would name the parameter
# ``last_event_id``, and errors name a header as the client sends it.
LastEventId = Annotated[
    str | None,
    HeaderParameter(
        name="Last-Event-ID",
        description="Resume after this event `id` (a revision): what was missed is replayed first. Sent by "
        "clients reconnecting; takes precedence over `since`.",
        schema_extra={"pattern": "^[0-9]{1,16}$"},
    ),
]
ResumeSince = Annotated[
    int | None,
    QueryParameter(
        ge=0,
        le=MAX_REVISION,
        description="Resume after this revision, as `Last-Event-ID` does (0: every live task first). Without "
        "either, the stream starts at the current revision.",
    ),
]


class EventController(Controller):
    """The live counterpart of ``/changes``: the same entries, pushed as they happen."""

    path = "/api/{user_id:str}/tasks"
    tags = ["Tasks"]
    security = [{BEARER_SCHEME: []}]
    dependencies = {"owner": Provide(provide_owner), "tasks": Provide(provide_tasks)}

    @get(
        "/events",
        operation_id="StreamTaskEvents",
        summary="Live task events",
        # A stream lasts until its token expires and holds no database connection while it idles: it must not
        # take one of the user's slots for requests in flight (it has bounds of its own, SSE_MAX_STREAMS_*).
        opt={EXEMPT_FROM_CONCURRENCY_LIMIT: True},
        responses={
            200: ResponseSpec(
                str,
                media_type="text/event-stream",
                description="Server-sent events: `id` the revision, `event` `upsert` or `delete`, `data` the "
                "change feed's entry as JSON. Comment lines are heartbeats. The stream ends when the token "
                f"expires; reconnect with a fresh token and `Last-Event-ID` (after `retry`, {RETRY_MILLISECONDS} "
                "ms).",
                generate_examples=False,
            ),
            **problem_responses(
                401,
                403,
                410,
                422,
                429,
                503,
                descriptions={
                    422: "`Last-Event-ID` or `since` is malformed, or names a revision the user has not reached; "
                    "`errors` names which.",
                    429: "This user already holds `SSE_MAX_STREAMS_PER_USER` streams here, or too many requests; "
                    "see `Retry-After`.",
                    503: "The database is unavailable, or this server holds all the streams it may "
                    "(`SSE_MAX_STREAMS_PER_PROCESS`) or is shutting down; retry after `Retry-After` seconds.",
                },
            ),
        },
    )
    async def stream_task_events(
        self,
        request: Request[Principal, Any, Any],
        owner: NamedDependency[Owner],
        tasks: NamedDependency[TaskService],
        db_session: NamedDependency[AsyncSession],
        last_event_id: LastEventId = None,
        since: ResumeSince = None,
    ) -> ASGIApp:
        """The caller's changes as they happen: each one event, in revision order. With `Last-Event-ID` (or
        `since`) what was missed is replayed first, with no gap and nothing twice."""
        live: LiveEvents = request.app.state.live_events
        verifier: TokenVerifier = request.app.state.verifier
        resume = since if last_event_id is None else _revision_in(last_event_id)
        # Subscribed before the first read: a change committed meanwhile wakes the stream, never falls between.
        subscription = live.hub.subscribe(owner.id)
        try:
            first = await _first_page(tasks, resume, from_header=last_event_id is not None)
        except BaseException:
            live.hub.unsubscribe(subscription)
            raise
        finally:
            # The stream reads in sessions of its own: this request's connection goes back to the pool now.
            await db_session.close()
        return EventStream(
            live.hub,
            subscription,
            first,
            resume_from=first.revision if resume is None else resume,
            read=live.feed_reader(owner),
            lifetime=verifier.seconds_left(request.auth),
            heartbeat=live.settings.sse_heartbeat_seconds,
            send_timeout=live.settings.sse_send_timeout_seconds,
        )


def _revision_in(last_event_id: str) -> int:
    """The revision a ``Last-Event-ID`` names (422 unless it is one this API could have sent)."""
    value = last_event_id.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 16 and int(value) <= MAX_REVISION):
        raise InvalidFieldError(
            "Last-Event-ID", f"Must be the id of an event: a revision, 0 to {MAX_REVISION}.", source="header"
        )
    return int(value)


async def _first_page(tasks: TaskService, resume: int | None, *, from_header: bool) -> ChangeFeed:
    """The replay's first page after ``resume`` (410 or 422 for a resume point the feed refuses); without one,
    nothing but the current revision."""
    if resume is None:
        return ChangeFeed(changes=[], revision=await tasks.repository.revision(), has_more=False)
    try:
        return await tasks.changes(resume, FEED_PAGE)
    except InvalidFieldError as exc:
        if not from_header:
            raise
        raise InvalidFieldError("Last-Event-ID", exc.field_error.message, source="header") from None
