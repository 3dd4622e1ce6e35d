"""Headers every response carries: the request id and the security headers (OWASP's secure-headers baseline)."""

from __future__ import annotations

from litestar.types import BeforeMessageSendHookHandler, Message, Scope

from app.observability.request_id import request_id

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
    """A ``before_send`` hook: it sees every response, including the router's own 404s and 405s.

    Headers are appended as raw pairs: Litestar's mutable header view scans the whole list for every header
    it sets, which costs more than the rest of this hook.
    """
    docs_prefix = docs_path.encode()
    common = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    ]
    api_policy = (b"content-security-policy", API_CSP.encode())
    docs_policy_header = (b"content-security-policy", docs_policy.encode())
    no_store = (b"cache-control", b"no-store")

    async def add_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        headers = list(message.get("headers") or ())
        names = {name.lower() for name, _ in headers}
        headers.append((b"x-request-id", request_id(scope).encode()))
        headers.extend(common)
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        headers.append(docs_policy_header if raw_path.startswith(docs_prefix) else api_policy)
        if b"cache-control" not in names:
            # Responses hold one user's data: no shared or browser cache may keep them.
            headers.append(no_store)
        if b"allow" in names:
            headers = _with_full_allow(headers, scope)
        message["headers"] = headers

    return add_headers


def _with_full_allow(headers: list[tuple[bytes, bytes]], scope: Scope) -> list[tuple[bytes, bytes]]:
    """``Allow`` (on OPTIONS and 405 responses) naming every method of the path, HEAD wherever GET is.

    HEAD is served wherever GET is (app/http_layers.py), though no handler declares it.
    """
    methods = _allowed_methods(scope) if scope.get("method") == "OPTIONS" else None
    if methods is None:
        methods = {
            method.strip().upper()
            for name, value in headers
            if name.lower() == b"allow"
            for method in value.decode("latin-1").split(",")
            if method.strip()
        }
    if "GET" in methods:
        methods = {*methods, "HEAD"}
    headers = [(n, v) for n, v in headers if n.lower() != b"allow"]
    headers.append((b"allow", ", ".join(sorted(methods)).encode()))
    return headers


def _allowed_methods(scope: Scope) -> set[str] | None:
    """Every method of the route, for ``Allow``.

    Litestar builds a path's automatic OPTIONS handler from the first handler registered for the path, so
    its ``Allow`` misses methods that other handlers on the same path add (GET next to POST, say).
    """
    handler = scope.get("route_handler")
    paths: set[str] = getattr(handler, "paths", set())
    for route in scope["litestar_app"].routes:
        if route.path in paths and hasattr(route, "methods"):
            return set(route.methods)
    return None
