"""CORS for the browser frontend: what it may send and read, and refused preflights as problem documents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from litestar.config.cors import CORSConfig
from litestar.constants import DEFAULT_ALLOWED_CORS_HEADERS
from litestar.datastructures import Headers
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Method, Receive, Scope, Send

from app.errors import FieldError
from app.http_layers import send_problem

__all__ = (
    "CORS_ALLOWED_HEADERS",
    "CORS_ALLOWED_METHODS",
    "CORS_EXPOSED_HEADERS",
    "cors_config",
    "preflight_refusals",
    "refuse_preflights_as_problems",
)

#: Methods a page on an allowed origin may use (HEAD is served wherever GET is).
CORS_ALLOWED_METHODS: Final[tuple[Method, ...]] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: Request headers it may send; ``X-Request-ID`` lets it correlate its requests with the service's logs,
#: ``Idempotency-Key`` makes a retried write apply once, ``Last-Event-ID`` resumes an event stream.
CORS_ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "X-Request-ID",
    "Idempotency-Key",
    "Last-Event-ID",
)
#: Response headers its scripts may read (``Idempotent-Replayed``: this answer is a stored one, nothing written).
CORS_EXPOSED_HEADERS = (
    "X-Total-Count",
    "Link",
    "Location",
    "ETag",
    "X-Request-ID",
    "Idempotent-Replayed",
    "Content-Disposition",
)
#: Seconds a browser may reuse a granted preflight.
CORS_MAX_AGE_SECONDS = 600


def cors_config(origins: Sequence[str]) -> CORSConfig:
    """CORS for ``origins`` (``CORS_ORIGINS``)."""
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=list(CORS_ALLOWED_METHODS),
        allow_headers=list(CORS_ALLOWED_HEADERS),
        expose_headers=list(CORS_EXPOSED_HEADERS),
        max_age=CORS_MAX_AGE_SECONDS,
    )


def preflight_refusals(config: CORSConfig, headers: Headers) -> list[FieldError]:
    """What a preflight from ``Origin`` asks for that ``config`` does not grant; empty when it is granted.

    The same three checks, in the same terms, as Litestar's CORS middleware makes (litestar 2.25,
    ``litestar/middleware/_internal/cors.py``), through ``CORSConfig``'s public API; the tests in
    ``tests/test_http_semantics.py`` hold the two to the same verdicts.
    """
    refusals: list[FieldError] = []
    origin = headers.get("origin", "")
    if not config.is_origin_allowed(origin):
        refusals.append(FieldError("Origin", f"Origin {origin} is not allowed.", "header"))
    method = headers.get("access-control-request-method")
    if method and not config.is_allow_all_methods and method not in config.allow_methods:
        allowed = ", ".join(sorted(config.allow_methods))
        message = f"Method {method} is not allowed; allowed: {allowed}."
        refusals.append(FieldError("Access-Control-Request-Method", message, "header"))
    requested = [name.strip() for name in headers.get("access-control-request-headers", "").split(",") if name.strip()]
    if requested and not config.is_allow_all_headers:
        granted = {name.lower() for name in (*config.allow_headers, *DEFAULT_ALLOWED_CORS_HEADERS)}
        if refused := [name for name in requested if name.lower() not in granted]:
            allowed = ", ".join(sorted(granted))
            refusals.append(
                FieldError(
                    "Access-Control-Request-Headers",
                    f"{'Header' if len(refused) == 1 else 'Headers'} {', '.join(refused)} "
                    f"{'is' if len(refused) == 1 else 'are'} not allowed; allowed: {allowed}.",
                    "header",
                )
            )
    return refusals


def refuse_preflights_as_problems(app: ASGIApp, config: CORSConfig) -> ASGIApp:
    """Answer a refused CORS preflight with a 400 problem document naming what was refused.

    Wraps the application outside Litestar's CORS middleware, which would answer ``400 text/plain``; a granted
    preflight (and every other request) goes on to it unchanged. Like that middleware, any ``OPTIONS`` with an
    ``Origin`` is taken for a preflight.
    """

    async def checked(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] == "OPTIONS":
            headers = Headers.from_scope(scope)
            if headers.get("origin") and (refusals := preflight_refusals(config, headers)):
                detail = " ".join(["CORS preflight refused.", *(refusal.message for refusal in refusals)])
                await send_problem(scope, receive, send, 400, detail, errors=refusals)
                return
        await app(scope, receive, send)

    return checked
