"""Entity tags for tasks (RFC 9110 §8.8.3) and the If-Match / If-None-Match preconditions built on them."""

from __future__ import annotations

import re

__all__ = ("ANY", "Precondition", "accepted_versions", "etag_for", "matches", "parse_entity_tags")

#: A task's ETag is its version number, quoted: strong, opaque to clients, new on every change.
_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*(?:,|$)')
#: How etag_for spells a version: ASCII digits, no leading zero, small enough for a 64-bit column.
_VERSION = re.compile(r"[1-9][0-9]{0,17}", re.ASCII)


class _Any:
    """``*``: any current representation."""

    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()
#: The versions an If-Match / If-None-Match header names (weak ones marked), or ``ANY`` for ``*``.
Precondition = frozenset[tuple[bool, str]] | _Any


def etag_for(version: int) -> str:
    """The ETag header value of a task at ``version``."""
    return f'"{version}"'


def parse_entity_tags(header: str | None) -> Precondition | None:
    """Parse an If-Match / If-None-Match value; ``None`` when absent. Malformed parts match nothing."""
    if header is None:
        return None
    if header.strip() == "*":
        return ANY
    tags: set[tuple[bool, str]] = set()
    position = 0
    while position < len(header):
        match = _TAG.match(header, position)
        if match is None:
            break  # the rest is not an entity tag; it can only fail to match
        tags.add((match.group(1) is not None, match.group(2)))
        position = match.end()
    return frozenset(tags)


def matches(precondition: Precondition, version: int, *, weak: bool) -> bool:
    """Whether ``version``'s ETag satisfies the tags: strong comparison for If-Match, weak for If-None-Match."""
    if isinstance(precondition, _Any):
        return True
    current = str(version)
    return any(value == current and (weak or not is_weak) for is_weak, value in precondition)


def accepted_versions(precondition: Precondition) -> frozenset[int] | None:
    """The versions an If-Match accepts (strong tags only, as RFC 9110 requires); ``None`` for ``*``."""
    if isinstance(precondition, _Any):
        return None
    # Strong comparison is character by character (RFC 9110 §8.8.3.2): only the exact spelling an ETag of ours
    # has can match, so "01" and "²" (which str.isdigit() accepts and int() refuses) name no version.
    return frozenset(int(value) for weak, value in precondition if not weak and _VERSION.fullmatch(value))
