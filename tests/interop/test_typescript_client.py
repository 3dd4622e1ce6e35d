"""A TypeScript client generated from the service's OpenAPI document type-checks a program that calls every
operation, and refuses wrong calls.

openapi-typescript turns ``/schema/openapi.json`` into types, openapi-fetch is the client they drive and ``tsc``
checks ``better-auth/typed-client/check.ts`` (every operation, chained as a frontend would) and ``wrong.ts``
(calls it must refuse), all three pinned in the Better Auth fixture's lock. The generated types go to a
temporary directory, never into the tree.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.better_auth import FIXTURE_DIR
from tests.support.servers import served_openapi_document

TYPED_CLIENT = FIXTURE_DIR / "typed-client"
BIN = FIXTURE_DIR / "node_modules" / ".bin"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
#: ``api.GET("/api/{user_id}/tasks"`` in check.ts: openapi-fetch's call of one operation.
CALL = re.compile(r'\bapi\.(GET|PUT|POST|DELETE|PATCH|HEAD|OPTIONS|TRACE)\(\s*"([^"]+)"')
#: ``wrong.ts(14,60): error TS2322: …`` with ``--pretty false``.
TSC_ERROR = re.compile(r"^(?P<file>\S+?)\((?P<line>\d+),\d+\): error TS\d+", re.MULTILINE)
EXPECTED_ERROR = re.compile(r"//\s*type error\s*$")


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return served_openapi_document(tmp_path_factory.mktemp("openapi"))


@pytest.fixture(scope="module")
def generated_types(
    better_auth_installed: Path, document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``schema.d.ts`` as a frontend would generate it from the served document."""
    directory = tmp_path_factory.mktemp("typed-client")
    (directory / "openapi.json").write_text(json.dumps(document))
    schema = directory / "schema.d.ts"
    # openapi-typescript makes a property with a default required even in a request body whose schema is a
    # component (TaskCreate's `completed`), so a client could not send `{"title": …}`; the flag turns that off.
    generated = subprocess.run(
        [BIN / "openapi-typescript", directory / "openapi.json", "-o", schema, "--default-non-nullable", "false"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    return schema


def type_check(schema: Path, source: str) -> subprocess.CompletedProcess[str]:
    """``tsc --noEmit`` over one file of typed-client/, with ``todo-api-schema`` resolved to ``schema``."""
    config = schema.with_name(f"tsconfig.{Path(source).stem}.json")
    config.write_text(
        json.dumps(
            {
                "extends": str(TYPED_CLIENT / "tsconfig.json"),
                "compilerOptions": {"paths": {"todo-api-schema": [str(schema)]}},
                "files": [str(TYPED_CLIENT / source)],
            }
        )
    )
    return subprocess.run(
        [BIN / "tsc", "--noEmit", "--pretty", "false", "-p", config],
        cwd=TYPED_CLIENT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_program_calls_every_operation(document: dict[str, Any]) -> None:
    operation_ids = {
        (method.upper(), path): operation["operationId"]
        for path, path_item in document["paths"].items()
        for method, operation in path_item.items()
        if method in HTTP_METHODS
    }
    called = set(CALL.findall((TYPED_CLIENT / "check.ts").read_text()))

    assert called <= operation_ids.keys(), called - operation_ids.keys()
    assert {operation_ids[call] for call in called} == set(operation_ids.values())


def test_generated_client_type_checks_a_program_calling_every_operation(generated_types: Path) -> None:
    checked = type_check(generated_types, "check.ts")

    assert checked.returncode == 0, f"tsc refused check.ts:\n{checked.stdout}{checked.stderr}"


def test_generated_client_refuses_wrong_calls_and_mistyped_headers(generated_types: Path) -> None:
    """The check above could pass vacuously (an unresolved schema, headers typed `unknown`); this proves it can't."""
    lines = (TYPED_CLIENT / "wrong.ts").read_text().splitlines()
    expected = {number for number, line in enumerate(lines, start=1) if EXPECTED_ERROR.search(line)}

    checked = type_check(generated_types, "wrong.ts")
    reported = {(error["file"], int(error["line"])) for error in TSC_ERROR.finditer(checked.stdout)}

    assert checked.returncode != 0
    assert expected
    assert reported == {("wrong.ts", number) for number in expected}, checked.stdout + checked.stderr
