"""The request id: one token per request that ties its response header, its log line and its audit events together.

The caller's ``X-Request-ID`` is kept when it is safe to echo (a frontend correlating its own logs), else a new
one is made. It is stored in the scope's state the first time anything asks, so the security headers
(app/headers.py), the request log and the audit trail all name the same id.
"""

from __future__ import annotations

import random
import re
from typing import Any

from litestar.types import Scope

__all__ = ("REQUEST_ID_HEADER", "request_id")

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(scope: Scope) -> str:
    """This request's id: the caller's ``X-Request-ID`` when it is a safe token, else a new one; stable per request."""
    state: dict[str, Any] = scope.setdefault("state", {})
    current = state.get("request_id")
    if isinstance(current, str):
        return current
    incoming = next(
        (value.decode("latin-1") for name, value in scope.get("headers", []) if name == REQUEST_ID_HEADER.encode()),
        "",
    )
    if not _SAFE_REQUEST_ID.fullmatch(incoming):
        # A correlation token, not a secret: Python's PRNG (reseeded in every worker) spares each request the
        # system call behind uuid4.
        incoming = f"{random.getrandbits(128):032x}"
    state["request_id"] = incoming
    return str(state["request_id"])
