"""The OpenAPI document: security scheme, documented error responses and the Scalar docs page."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from litestar import Litestar
from litestar.exceptions import ImproperlyConfiguredException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Schema,
    SecurityScheme,
    Tag,
)

from app.docs import ScalarDocs
from app.errors import PROBLEM_JSON, ProblemDetails
from app.http_layers import MAX_REQUEST_HEADER_BYTES, MAX_REQUEST_HEADERS, MAX_REQUEST_TARGET_BYTES

__all__ = ("BEARER_SCHEME", "HEADER_SCHEMAS", "finalize_schema", "openapi_config", "problem_responses")

BEARER_SCHEME = "BearerToken"

_DESCRIPTIONS = {
    401: "Missing, malformed, expired or otherwise invalid bearer token (see `WWW-Authenticate`).",
    403: "The token is valid but its subject is not the `user_id` in the path.",
    404: "No such task for this user (another user's task is reported the same way).",
    409: (
        "The user already holds `MAX_TASKS_PER_USER` tasks (10 000 by default), or a request with this "
        "`Idempotency-Key` is still being processed (retry later); nothing was written."
    ),
    410: (
        "`since` (or `Last-Event-ID`) is older than the oldest tombstone kept (SYNC_TOMBSTONE_RETENTION_DAYS): "
        "sync again from 0."
    ),
    412: "`If-Match` does not match the task's current ETag: it changed since it was read. Nothing was changed.",
    413: "The request body is larger than 64 KiB.",
    414: f"The request URL (path and query) is longer than {MAX_REQUEST_TARGET_BYTES // 1024} KiB.",
    415: "The request body is not `application/json`.",
    422: (
        "The request is invalid; `errors` names each offending field (the `Idempotency-Key` header when it is "
        "malformed, or was used for a different request)."
    ),
    429: "Too many requests from this user (or, without a valid token, this address); see `Retry-After`.",
    431: (
        f"The request carries more than {MAX_REQUEST_HEADERS} header fields, or more than "
        f"{MAX_REQUEST_HEADER_BYTES // 1024} KiB of them."
    ),
    503: "The database is unavailable right now; retry after `Retry-After` seconds.",
}

#: What the value of each response header the document names looks like. Litestar's ``ResponseHeader`` takes no
#: schema, and a header without one is invalid OpenAPI (and typed ``unknown`` in generated clients), so
#: :func:`finalize_schema` adds them from here; a documented header missing from this table stops the app.
HEADER_SCHEMAS = {
    "ETag": Schema(type=OpenAPIType.STRING),
    "Location": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.URI_REFERENCE),
    "X-Total-Count": Schema(type=OpenAPIType.INTEGER, minimum=0),
    "Link": Schema(type=OpenAPIType.STRING, examples=['</api/u1/tasks?limit=50&cursor=WzEsIjIwMjYt…>; rel="next"']),
    "Content-Disposition": Schema(type=OpenAPIType.STRING),
    "Retry-After": Schema(type=OpenAPIType.INTEGER, minimum=0),
    "WWW-Authenticate": Schema(type=OpenAPIType.STRING),
    "Idempotent-Replayed": Schema(type=OpenAPIType.STRING, enum=["true"]),
}

#: What any request may be refused with before it is routed (app/http_layers.py), so every operation lists them.
_ALWAYS = (414, 431)

#: The header each of these problem statuses always carries, which its description tells the client to read.
_PROBLEM_HEADERS = {
    401: ("WWW-Authenticate", "The bearer challenge (RFC 6750 §3); `error_description` says what is wrong."),
    429: ("Retry-After", "Seconds to wait before sending another request."),
    503: ("Retry-After", "Seconds to wait before trying again."),
}


def problem_responses(*statuses: int, descriptions: Mapping[int, str] | None = None) -> dict[int, ResponseSpec]:
    """Document these error statuses, and the oversized-request ones every operation may answer, with the
    problem-details schema; ``descriptions`` words some of them for the one operation (what a 503 of an event
    stream means, say)."""
    return {
        status: ResponseSpec(
            data_container=ProblemDetails,
            description=(descriptions or {}).get(status) or _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in sorted({*statuses, *_ALWAYS})
    }


def openapi_config(version: str, docs: ScalarDocs) -> OpenAPIConfig:
    """OpenAPI served at ``/schema/openapi.json`` with the Scalar reference at ``/schema/scalar``."""
    return OpenAPIConfig(
        title="Todo API",
        version=version,
        description=(
            "Owner-scoped task CRUD for a multi-user Todo app. Every `/api` route needs "
            "`Authorization: Bearer <JWT>` issued by Better Auth (or signed with the shared HS256 secret); "
            "the `user_id` in the path must be the token's subject. Errors are `application/problem+json` "
            "(RFC 9457)."
        ),
        path="/schema",
        render_plugins=[docs],
        components=Components(
            security_schemes={
                BEARER_SCHEME: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT",
                    description="A Better Auth JWT (EdDSA/RS256/PS256/ES256/ES512 via JWKS) or an HS256 token.",
                )
            }
        ),
        tags=[
            Tag(name="Tasks", description="A user's own tasks."),
            Tag(name="Health", description="Liveness and readiness probes."),
        ],
    )


def finalize_schema(app: Litestar) -> None:
    """Finish what Litestar generates: drop its generic 400, and give every response header a schema.

    This service reports every validation failure as 422 with a problem-details body, documented per
    operation; leaving Litestar's 400 (with its own error schema) would describe a response that never comes.
    """
    operations: dict[str, Operation] = {}
    for path_item in (app.openapi_schema.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation: Operation | None = getattr(path_item, method)
            if operation is None or not operation.responses:
                continue
            if operation.operation_id:
                operations[operation.operation_id] = operation
            operation.responses.pop("400", None)
    for handler in _route_handlers(app):
        if isinstance(handler.operation_id, str) and handler.operation_id in operations:
            _restore_success_headers(handler, operations[handler.operation_id])
    for operation in operations.values():
        for status, response in (operation.responses or {}).items():
            if isinstance(response, OpenAPIResponse):
                _complete_headers(response, int(status))


def _route_handlers(app: Litestar) -> list[HTTPRouteHandler]:
    return [
        handler
        for route in app.routes
        for handler in getattr(route, "route_handlers", ())
        if isinstance(handler, HTTPRouteHandler)
    ]


def _restore_success_headers(handler: HTTPRouteHandler, operation: Operation) -> None:
    """Put back the ``response_headers`` Litestar drops when a ``ResponseSpec`` describes the success status."""
    response = (operation.responses or {}).get(str(handler.status_code))
    if not isinstance(response, OpenAPIResponse) or handler.status_code not in (handler.responses or {}):
        return
    headers = dict(response.headers or {})
    for header in handler.resolve_response_headers():
        headers.setdefault(header.name, OpenAPIHeader(description=header.description, required=header.required))
    response.headers = headers or None


def _complete_headers(response: OpenAPIResponse, status: int) -> None:
    """Add the header a problem status carries (``ResponseSpec`` cannot declare one), and each header's schema."""
    headers = dict(response.headers or {})
    if status in _PROBLEM_HEADERS:
        name, description = _PROBLEM_HEADERS[status]
        headers[name] = OpenAPIHeader(description=description, required=True)
    for name, header in headers.items():
        if isinstance(header, OpenAPIHeader) and header.schema is None:
            if name not in HEADER_SCHEMAS:
                raise ImproperlyConfiguredException(f"Response header {name!r} has no schema: add it to HEADER_SCHEMAS")
            header.schema = HEADER_SCHEMAS[name]
    if headers:
        response.headers = headers
