"""Services and tools some tests need: missing ones skip loudly on a developer's machine and fail under
``CI=true``, so CI never passes by skipping."""

from __future__ import annotations

import os

import pytest
import redis

__all__ = ("TEST_REDIS_URL", "in_ci", "require", "require_redis")

#: Database 15 of the local Redis: tests empty it freely.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, what: str) -> None:
    """Fail under CI, skip (with the reason) elsewhere, when ``condition`` is false; ``what`` says what is missing."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{what} (CI=true: required)", pytrace=False)
    pytest.skip(f"{what}; set CI=true to make this a failure")


def require_redis(url: str = TEST_REDIS_URL) -> None:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        require(False, f"Redis at {url} is not reachable: {exc!r}")
