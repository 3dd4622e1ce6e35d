"""Entity tags for tasks (RFC 9110 §8.8.3): a task's ETag is its version, and the conditional headers become
the versions they accept.

HTTP stays here and in the controller: the service only ever sees "the versions a write may apply to".
"""

from __future__ import annotations

import re

__all__ = ("etag_for", "if_match_versions", "if_none_match_holds")

#: One entity tag of a list: optional weakness marker, then the opaque tag in quotes.
_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*(?:,|$)')
#: How etag_for spells a version: ASCII digits, no leading zero, small enough for a 64-bit column.
_VERSION = re.compile(r"[1-9][0-9]{0,17}", re.ASCII)


def etag_for(version: int) -> str:
    """The ETag header value of a task at ``version``: strong, opaque to clients, new on every change."""
    return f'"{version}"'


def _tags(header: str) -> list[tuple[bool, str]]:
    """The (weak, opaque-tag) pairs of an If-Match / If-None-Match list; parsing stops at the first malformed
    part, which can only fail to match."""
    tags: list[tuple[bool, str]] = []
    position = 0
    while position < len(header):
        match = _TAG.match(header, position)
        if match is None:
            break
        tags.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    return tags


def if_match_versions(header: str | None) -> frozenset[int] | None:
    """The versions an ``If-Match`` lets a write apply to; ``None`` when any will do (no header, or ``*``).

    Strong comparison, character by character (RFC 9110 §8.8.3.2): weak tags never match, and only the exact
    spelling an ETag of ours has names a version, so ``"01"`` and ``"²"`` (which ``str.isdigit()`` accepts and
    ``int()`` refuses) name none. An empty set matches nothing: the write is refused with 412.
    """
    if header is None or header.strip() == "*":
        return None
    return frozenset(int(tag) for weak, tag in _tags(header) if not weak and _VERSION.fullmatch(tag))


def if_none_match_holds(header: str | None, version: int) -> bool:
    """Whether an ``If-None-Match`` names the current version (weak comparison, ``*`` included): then a GET
    answers 304."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    current = str(version)
    return any(tag == current for _, tag in _tags(header))
