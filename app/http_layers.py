"""ASGI layers around the whole application: what is decided before Litestar routes a request.

They wrap ``Litestar.asgi_handler`` (inside the app's ``before_send`` hooks, so their answers carry the request
id and security headers), and answer with the same problem documents as ``app/errors.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from app.errors import FieldError, IncompleteRequestError, problem_response

__all__ = (
    "HEAD_REQUEST",
    "MAX_REQUEST_HEADERS",
    "MAX_REQUEST_HEADER_BYTES",
    "MAX_REQUEST_TARGET_BYTES",
    "answer_head_like_get",
    "limit_request_headers",
    "send_problem",
)

#: Total bytes of all request header names and values. nginx reads a request's headers into at most 4 buffers
#: of 8 KiB (``large_client_header_buffers``); a browser sends one or two KiB, a Better Auth token under 2 KiB.
MAX_REQUEST_HEADER_BYTES = 32 * 1024
#: Header fields in one request (a browser sends about 15).
MAX_REQUEST_HEADERS = 100
#: Path and query string together; nginx's limit for the request line is one 8 KiB buffer. The longest URL this
#: API can take (a 255-character user id, ``q`` of 200 characters percent-encoded) is under 3 KiB.
MAX_REQUEST_TARGET_BYTES = 8 * 1024


async def send_problem(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    *,
    errors: Sequence[FieldError] | None = None,
) -> None:
    """Answer the request in ``scope`` with a problem document, from outside Litestar's routing."""
    response = problem_response(status, detail, errors=errors)
    request: Request[Any, Any, Any] = Request(scope, receive)
    asgi_response = response.to_asgi_response(None, request, is_head_response=scope.get("method") == "HEAD")
    await asgi_response(scope, receive, send)


def limit_request_headers(
    app: ASGIApp,
    *,
    max_header_bytes: int = MAX_REQUEST_HEADER_BYTES,
    max_headers: int = MAX_REQUEST_HEADERS,
    max_target_bytes: int = MAX_REQUEST_TARGET_BYTES,
) -> ASGIApp:
    """Refuse a request whose headers (431) or URL (414) are too large, before authentication or rate limits.

    uvicorn's httptools parser has no limit of its own: this bounds what the application spends on a request,
    not what the server buffered to build it (that is the reverse proxy's job; see docs/security.md).
    """

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        headers = list(scope["headers"])
        if len(headers) > max_headers:
            detail = f"The request has {len(headers)} header fields; at most {max_headers} are accepted."
            await send_problem(scope, receive, send, 431, detail)
            return
        size = sum(len(name) + len(value) for name, value in headers)
        if size > max_header_bytes:
            detail = f"The request headers are {size} bytes; at most {max_header_bytes} are accepted."
            await send_problem(scope, receive, send, 431, detail)
            return
        target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
        if target > max_target_bytes:
            detail = f"The request URL is {target} bytes; at most {max_target_bytes} are accepted."
            await send_problem(scope, receive, send, 414, detail)
            return
        await app(scope, receive, send)

    return limited


#: Set in ``scope["state"]`` of a HEAD request that :func:`answer_head_like_get` routes as a GET.
HEAD_REQUEST = "todo.head_request"


def answer_head_like_get(app: ASGIApp) -> ASGIApp:
    """Serve ``HEAD`` wherever ``GET`` is served (RFC 9110 §9.3.2): the GET response, headers and all, no body.

    Litestar routes ``HEAD`` only to handlers declared for it, and refuses a ``HEAD`` handler that returns a
    body; so the request is routed as ``GET`` (guards, rate limits and conditional requests apply as to a GET)
    and the body is dropped on the way out. ``Content-Length`` stays what the GET would send.
    """

    async def head_as_get(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "HEAD":
            await app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The server frames the response by the scope's method: told HEAD again, it sends no body framing
                # (a response without Content-Length, such as an event stream, would otherwise be chunked).
                scope["method"] = "HEAD"
                await send(message)
            elif not message.get("more_body", False):
                # The last body message (or a file the server would send itself) ends the response, empty.
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        scope["method"] = "GET"
        # Said in the scope for a response that never ends by itself (an event stream): it answers the head alone.
        scope.setdefault("state", {})[HEAD_REQUEST] = True
        try:
            await app(scope, receive, without_body)
        finally:
            scope["method"] = "HEAD"  # the request log names the method the client used

    return head_as_get


def refuse_incomplete_bodies(app: ASGIApp) -> ASGIApp:
    """A client that hangs up before its request body is complete gets a 400 in the books, not a 500.

    Litestar's body reader turns an ``http.disconnect`` met mid-body into ``InternalServerException("client
    disconnected prematurely")``, which the service would count, log and audit as a server error, although only
    the client went away (a browser aborting an upload, a load generator stopping). The request's ``receive``
    raises :class:`~app.errors.IncompleteRequestError` instead. Only for a request that announced a body, and
    only until that body is complete: afterwards a disconnect passes through as it is, which is how a
    long-running response (an event stream) learns that its client left.
    """

    async def watched(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not _announces_body(scope):
            await app(scope, receive, send)
            return
        complete = False

        async def receive_until_complete() -> ReceiveMessage:
            nonlocal complete
            message = await receive()
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
            elif message["type"] == "http.disconnect" and not complete:
                raise IncompleteRequestError
            return message

        await app(scope, receive_until_complete, send)

    return watched


def _announces_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in {b"0", b""}):
            return True
    return False
