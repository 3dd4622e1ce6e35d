"""Headers every response carries: the request id and the security headers (OWASP's secure-headers baseline)."""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import BeforeMessageSendHookHandler, Message, Scope

from app.audit import request_id

__all__ = ("API_CSP", "docs_csp", "security_headers_hook")

#: An API answers JSON: nothing in a response may load, run or frame anything.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def docs_csp(script_origin: str | None = None) -> str:
    """The docs page runs Scalar (its bundle and one inline configuration script) against this origin only."""
    scripts = " ".join(filter(None, ["'self'", "'unsafe-inline'", script_origin]))
    return (
        f"default-src 'self'; script-src {scripts}; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def security_headers_hook(docs_path: str, docs_policy: str) -> BeforeMessageSendHookHandler:
    """A ``before_send`` hook: it sees every response, including the router's own 404s and 405s."""
    docs_prefix = docs_path.encode()

    async def add_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        headers = MutableScopeHeaders.from_message(message)
        headers["X-Request-ID"] = request_id(scope)
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "no-referrer"
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        headers["Content-Security-Policy"] = docs_policy if raw_path.startswith(docs_prefix) else API_CSP
        if scope.get("method") == "OPTIONS" and "allow" in headers:
            headers["Allow"] = _allowed_methods(scope) or headers["allow"]
        if "cache-control" not in headers:
            # Responses hold one user's data: no shared or browser cache may keep them.
            headers["Cache-Control"] = "no-store"

    return add_headers


def _allowed_methods(scope: Scope) -> str | None:
    """Every method of the route, for ``Allow``.

    Litestar builds a path's automatic OPTIONS handler from the first handler registered for the path, so
    its ``Allow`` misses methods that other handlers on the same path add (GET next to POST, say).
    """
    handler = scope.get("route_handler")
    paths: set[str] = getattr(handler, "paths", set())
    for route in scope["litestar_app"].routes:
        if route.path in paths and hasattr(route, "methods"):
            return ", ".join(sorted(route.methods))
    return None
