"""Hostile input, swept: tokens, headers, query strings, paths and bodies an attacker would send.

Whatever arrives, the answer is a 4xx problem document (or a success where the input is in fact valid): never
a 5xx, and nothing in the log at error level or with a traceback. Each sweep collects every offending case
and reports them together, so one run shows the whole class.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.factories import Account, create_task
from tests.support.issuer import HS_SECRET, SigningKey, mint
from tests.support.tokens import REJECTED_TOKENS, b64, claims, hs256_by_hand


@pytest.fixture
def quiet_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record of the test; after it, none may be an error or carry a traceback."""
    with caplog.at_level(logging.DEBUG):
        yield caplog
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [f"{r.name}: {r.getMessage()}" for r in loud]


def problems(responses: list[tuple[str, httpx.Response]], allowed: set[int] | None = None) -> list[str]:
    """The cases answered with a 5xx, a status outside ``allowed``, or an error that is not problem+json."""
    found = []
    for case, response in responses:
        status = response.status_code
        is_problem = response.headers.get("content-type", "").startswith("application/problem+json")
        if status >= 500 or (allowed is not None and status not in allowed) or (status >= 400 and not is_problem):
            found.append(f"{case}: {status} {response.text[:200]}")
    return found


def _segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


def hostile_tokens(alice: Account, keys: dict[str, SigningKey]) -> dict[str, str]:
    signed = {name: build(alice.id, keys) for name, (build, _) in REJECTED_TOKENS.items()}
    body = _segment(claims(alice.id))
    return {
        **signed,
        "header is an array": f"{_segment([1, 2])}.{body}.c2ln",
        "header is a string": f"{_segment('HS256')}.{body}.c2ln",
        "header is null": f"{_segment(None)}.{body}.c2ln",
        "alg is a list": f"{_segment({'alg': ['HS256']})}.{body}.c2ln",
        "alg is a number": f"{_segment({'alg': 256})}.{body}.c2ln",
        "kid is an object": f"{_segment({'alg': 'EdDSA', 'kid': {'a': 1}})}.{body}.c2ln",
        "kid is 10 KB": f"{_segment({'alg': 'EdDSA', 'kid': 'k' * 5000})}.{body}.c2ln",
        "header not JSON": f"{b64(b'{not json')}.{body}.c2ln",
        "header invalid UTF-8": f"{b64(bytes([0xFF, 0xFE]))}.{body}.c2ln",
        "payload is an array": hs256_by_hand([1], HS_SECRET.encode()),  # type: ignore[arg-type]
        "payload is a number": f"{_segment({'alg': 'HS256'})}.{_segment(1)}.c2ln",
        "five segments (JWE shape)": "a.b.c.d.e",
        "only dots": "...",
        "b64 padding": f"{_segment({'alg': 'HS256'})}==.{body}.c2ln",
        "nested jwt in kid": mint(alice.id, keys["EdDSA"], kid=mint(alice.id, keys["EdDSA"])),
        "sub is an object": hs256_by_hand({**claims(alice.id), "sub": {"id": alice.id}}, HS_SECRET.encode()),
        "aud is an object": hs256_by_hand({**claims(alice.id), "aud": {"a": 1}}, HS_SECRET.encode()),
        "iss is a list": hs256_by_hand({**claims(alice.id), "iss": ["x"]}, HS_SECRET.encode()),
        "exp is a list": hs256_by_hand({**claims(alice.id), "exp": [1]}, HS_SECRET.encode()),
        "iat is a string": hs256_by_hand({**claims(alice.id), "iat": "now"}, HS_SECRET.encode()),
        "email is a number": hs256_by_hand({**claims(alice.id), "email": 5}, HS_SECRET.encode()),
    }


async def test_no_token_produces_a_server_error(
    client: httpx.AsyncClient, alice: Account, signing_keys: dict[str, SigningKey], quiet_log: Any
) -> None:
    responses = []
    for case, token in hostile_tokens(alice, signing_keys).items():
        for method, url in (("GET", alice.tasks_url()), ("POST", alice.tasks_url())):
            response = await client.request(
                method, url, json={"title": "x"}, headers={"Authorization": f"Bearer {token}".encode()}
            )
            responses.append((f"{case} {method}", response))

    # Some of the signed ones are accepted (a boolean email is just ignored): 2xx is fine, 5xx never.
    assert problems(responses, {200, 201, 401, 431}) == []
    assert all(r.headers.get("www-authenticate") for _, r in responses if r.status_code == 401)


HOSTILE_HEADERS: dict[str, dict[str, Any]] = {
    "If-Match unicode digit": {"If-Match": '"\u00b2"'.encode()},
    "If-Match leading zero": {"If-Match": '"01"'},
    "If-Match huge number": {"If-Match": '"' + "9" * 5000 + '"'},
    "If-Match many tags": {"If-Match": ", ".join(f'"{n}"' for n in range(2000))},
    "If-Match unterminated": {"If-Match": '"1'},
    "If-Match latin-1 bytes": {"If-Match": b'"\xff\xfe"'},
    "If-None-Match garbage": {"If-None-Match": "W/W/W/"},
    "Content-Type latin-1 charset": {"Content-Type": "application/json; charset=latin-1"},
    "Content-Type text": {"Content-Type": "text/plain"},
    "Content-Type long": {"Content-Type": "application/" + "x" * 4000},
    "Content-Type empty": {"Content-Type": ""},
    "Content-Type bytes": {"Content-Type": b"application/\xff"},
    "X-Request-ID latin-1 junk": {"X-Request-ID": b"\xff" * 300},
    "X-Request-ID huge": {"X-Request-ID": "a" * 4000},
    "Accept odd": {"Accept": "text/html;q=abc, */*;q=-1"},
    "Authorization twice": {"Authorization": "Bearer a, Bearer b"},
    "Forwarded for spoof": {"X-Forwarded-For": "1.2.3.4, ::1, garbage"},
}


async def test_no_header_produces_a_server_error(client: httpx.AsyncClient, alice: Account, quiet_log: Any) -> None:
    task = await create_task(client, alice)
    responses = []
    for case, extra in HOSTILE_HEADERS.items():
        headers = {**alice.headers, **extra}
        for method, url in (
            ("GET", alice.tasks_url(task["id"])),
            ("PUT", alice.tasks_url(task["id"])),
            ("PATCH", alice.tasks_url(task["id"], "complete")),
            ("POST", alice.tasks_url()),
        ):
            response = await client.request(method, url, content=b'{"title": "t"}', headers=headers)
            responses.append((f"{case} {method}", response))

    assert problems(responses) == []


HOSTILE_QUERIES = [
    "completed=maybe",
    "completed=",
    "completed=1&completed=0",
    "limit=-1",
    "limit=0",
    "limit=" + "9" * 5000,
    "limit=1e3",
    "limit=\u0661",
    "offset=" + "9" * 40,
    "offset=-0",
    "offset=NaN",
    "sort=unknown",
    "sort=" + "-" * 500,
    "q=%00",
    "q=%25%5F%5C",
    "q=" + "x" * 5000,
    "q=%FF%FE",
    "q=%E3%83%A6",
    "q=" + "%" * 10,
    "q=a&q=b",
    "%FF=%FF",
    "&&&==&",
    "limit=10&limit=abc",
]


async def test_no_query_string_produces_a_server_error(
    client: httpx.AsyncClient, alice: Account, quiet_log: Any
) -> None:
    await create_task(client, alice, title="findable 100%_\\")
    responses = [
        (query, await client.get(f"{alice.tasks_url()}?{query}", headers=alice.headers)) for query in HOSTILE_QUERIES
    ]

    assert problems(responses, {200, 400, 422}) == []


async def test_no_path_produces_a_server_error(client: httpx.AsyncClient, alice: Account, quiet_log: Any) -> None:
    paths = [
        alice.tasks_url("not-a-uuid"),
        alice.tasks_url("%00"),
        alice.tasks_url("00000000-0000-0000-0000-00000000000g"),
        alice.tasks_url("0" * 10_000),
        alice.tasks_url("%FF%FE"),
        alice.tasks_url("..%2F..%2Fetc%2Fpasswd"),
        f"/api/{alice.id}%2Fx/tasks",
        f"/api/{alice.id}%00/tasks",
        "/api/%FF/tasks",
        "/api//tasks",
        "/api/" + "u" * 10_000 + "/tasks",
        alice.tasks_url("00000000-0000-0000-0000-000000000000", "complete", "x"),
    ]
    responses = []
    for path in paths:
        for method in ("GET", "PUT", "PATCH", "DELETE", "POST"):
            response = await client.request(method, path, json={"title": "x"}, headers=alice.headers)
            responses.append((f"{method} {path[:80]}", response))

    assert problems(responses) == []


def _many_keys(count: int, duplicate: bool) -> bytes:
    members = [f'"{n:x}":0' for n in range(count)]
    if duplicate:
        members.append('"1":0')
    return ("{" + ",".join(['"title":"t"', *members]) + "}").encode()


HOSTILE_BODIES: dict[str, bytes] = {
    "empty": b"",
    "null": b"null",
    "array": b"[]",
    "string": b'"title"',
    "number": b"1",
    "truncated": b'{"title": "t"',
    "NaN": b'{"title": "t", "x": NaN}',
    "Infinity": b'{"title": "t", "x": Infinity}',
    "huge integer field": b'{"title": "t", "completed": ' + b"1" * 5000 + b"}",
    "huge integer unknown field": b'{"title": "t", "x": ' + b"1" * 60_000 + b"}",
    "huge exponent": b'{"title": "t", "x": 1e999999}',
    "deep nesting": b'{"title": "t", "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
    "deep objects": b'{"title": "t", "x": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}",
    "duplicate key": b'{"title": "a", "title": "b"}',
    "6 000 keys, one duplicate": _many_keys(6_000, duplicate=True),
    "6 000 keys, none duplicate": _many_keys(6_000, duplicate=False),
    "duplicate key in a nested object": b'{"title": "t", "x": {"a": 1, "a": 2}}',
    "invalid UTF-8": b'{"title": "\xff\xfe"}',
    "lone surrogate": b'{"title": "\\ud800"}',
    "NUL in title": b'{"title": "a\\u0000b"}',
    "BOM": b'\xef\xbb\xbf{"title": "t"}',
    "UTF-16": '{"title": "t"}'.encode("utf-16"),
    "title of RTL override": '{"title": "\u202e\u200b"}'.encode(),
    "title wrong type": b'{"title": ["t"]}',
    "completed as string": b'{"title": "t", "completed": "true"}',
    "over the size cap": b'{"title": "t", "description": "' + b"x" * (64 * 1024) + b'"}',
}


async def test_no_body_produces_a_server_error(client: httpx.AsyncClient, alice: Account, quiet_log: Any) -> None:
    task = await create_task(client, alice)
    responses = []
    for case, body in HOSTILE_BODIES.items():
        for method, url in (("POST", alice.tasks_url()), ("PUT", alice.tasks_url(task["id"]))):
            response = await client.request(
                method, url, content=body, headers={**alice.headers, "Content-Type": "application/json"}
            )
            responses.append((f"{case} {method}", response))

    assert problems(responses, {200, 201, 400, 413, 415, 422}) == []
    refused = {case for case, r in responses if r.status_code == 422 and "duplicate key" in r.text}
    assert "6 000 keys, one duplicate POST" in refused
    assert "duplicate key in a nested object PUT" in refused
