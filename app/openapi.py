"""The OpenAPI document: security scheme, documented error responses and the Scalar docs page."""

from __future__ import annotations

from http import HTTPStatus

from litestar import Litestar
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, Operation, SecurityScheme, Tag

from app.docs import ScalarDocs
from app.errors import PROBLEM_JSON, ProblemDetails

__all__ = ("BEARER_SCHEME", "finalize_schema", "openapi_config", "problem_responses")

BEARER_SCHEME = "BearerToken"

_DESCRIPTIONS = {
    401: "Missing, malformed, expired or otherwise invalid bearer token (see `WWW-Authenticate`).",
    403: "The token is valid but its subject is not the `user_id` in the path.",
    404: "No such task for this user (another user's task is reported the same way).",
    412: "`If-Match` does not match the task's current ETag: it changed since it was read. Nothing was changed.",
    413: "The request body is larger than 64 KiB.",
    415: "The request body is not `application/json`.",
    422: "The request is invalid; `errors` names each offending field.",
    429: "Too many requests from this user (or, without a valid token, this address); see `Retry-After`.",
    503: "The database is unavailable right now; retry after `Retry-After` seconds.",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """Document these error statuses with the problem-details schema."""
    return {
        status: ResponseSpec(
            data_container=ProblemDetails,
            description=_DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in statuses
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
    """Remove the generic 400 response Litestar adds to every operation with parameters.

    This service reports every validation failure as 422 with a problem-details body, documented per
    operation; leaving Litestar's 400 (with its own error schema) would describe a response that never comes.
    """
    for path_item in (app.openapi_schema.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation: Operation | None = getattr(path_item, method)
            if operation is not None and operation.responses:
                operation.responses.pop("400", None)
