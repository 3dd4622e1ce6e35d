"""The served OpenAPI document is valid OpenAPI 3.1; every operation is named, secured and lists the statuses
it really answers; and every response header in it has a typed schema.

Frontends generate their clients from ``/schema/openapi.json`` (tests/interop/test_typescript_client.py does
so with openapi-typescript): an invalid document breaks the generator, and a header without a schema is typed
``unknown``.
"""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar, get
from litestar.datastructures import ResponseHeader
from litestar.exceptions import ImproperlyConfiguredException
from litestar.openapi import OpenAPIConfig
from openapi_spec_validator import OpenAPIV31SpecValidator

from app.openapi import finalize_schema
from tests.support.servers import served_openapi_document

#: Statuses any request may get before it is routed (a URL or headers too large), so every operation lists them.
REFUSED_BEFORE_ROUTING = {"414", "431"}
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
TASK_OPERATIONS = {
    ("/api/{user_id}/tasks", "get"): ("ListTasks", {"200", "401", "403", "422", "429", "503"}),
    ("/api/{user_id}/tasks", "post"): ("CreateTask", {"201", "401", "403", "409", "413", "415", "422", "429", "503"}),
    ("/api/{user_id}/tasks/{task_id}", "get"): ("GetTask", {"200", "304", "401", "403", "404", "422", "429", "503"}),
    ("/api/{user_id}/tasks/{task_id}", "put"): (
        "UpdateTask",
        {"200", "401", "403", "404", "409", "412", "413", "415", "422", "429", "503"},
    ),
    ("/api/{user_id}/tasks/{task_id}", "delete"): (
        "DeleteTask",
        {"204", "401", "403", "404", "409", "412", "422", "429", "503"},
    ),
    ("/api/{user_id}/tasks/{task_id}/complete", "patch"): (
        "ToggleTaskCompletion",
        {"200", "401", "403", "404", "409", "412", "422", "429", "503"},
    ),
    ("/api/{user_id}/export", "get"): ("ExportAccount", {"200", "401", "403", "429", "503"}),
    ("/api/{user_id}", "delete"): ("EraseAccount", {"204", "401", "403", "429", "503"}),
}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return served_openapi_document(tmp_path_factory.mktemp("openapi"))


def response_headers(document: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every documented response header, keyed by (operationId, status, header name)."""
    return {
        (operation["operationId"], status, name): header
        for path_item in document["paths"].values()
        for method, operation in path_item.items()
        if method in HTTP_METHODS
        for status, response in operation["responses"].items()
        for name, header in response.get("headers", {}).items()
    }


def test_served_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in OpenAPIV31SpecValidator(document).iter_errors()
    ]

    assert document["openapi"].startswith("3.1.")
    assert errors == []


def test_the_bearer_scheme_is_declared(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["BearerToken"]

    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")


@pytest.mark.parametrize(("path", "method"), list(TASK_OPERATIONS))
def test_every_task_operation_is_named_secured_and_lists_its_real_statuses(
    document: dict[str, Any], path: str, method: str
) -> None:
    operation = document["paths"][path][method]
    operation_id, statuses = TASK_OPERATIONS[(path, method)]

    assert operation["operationId"] == operation_id
    assert operation["security"] == [{"BearerToken": []}]
    assert set(operation["responses"]) == statuses | REFUSED_BEFORE_ROUTING
    for status in (statuses | REFUSED_BEFORE_ROUTING) - {"200", "201", "204", "304"}:
        content = operation["responses"][status]["content"]
        assert content["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/ProblemDetails"}


def test_list_pages_document_their_link_and_cursor(document: dict[str, Any]) -> None:
    operation = document["paths"]["/api/{user_id}/tasks"]["get"]
    cursor = next(parameter for parameter in operation["parameters"] if parameter["name"] == "cursor")

    assert operation["responses"]["200"]["headers"]["Link"]["schema"]["type"] == "string"
    assert cursor["in"] == "query"
    assert cursor["schema"]["pattern"] == "^[A-Za-z0-9_-]+$"


def test_the_export_documents_the_document_it_streams(document: dict[str, Any]) -> None:
    content = document["paths"]["/api/{user_id}/export"]["get"]["responses"]["200"]["content"]

    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/AccountExport"}
    assert set(document["components"]["schemas"]["AccountExport"]["properties"]) == {"user", "tasks"}


def test_no_operation_documents_a_400(document: dict[str, Any]) -> None:
    documented = {status for item in document["paths"].values() for op in item.values() for status in op["responses"]}

    assert "400" not in documented


def test_health_operations_need_no_token(document: dict[str, Any]) -> None:
    assert "security" not in document["paths"]["/health"]["get"]
    assert "security" not in document["paths"]["/health/ready"]["get"]


def test_request_bodies_document_their_constraints(document: dict[str, Any]) -> None:
    create = document["components"]["schemas"]["TaskCreate"]

    assert create["required"] == ["title"]
    assert create["properties"]["title"]["maxLength"] == 200
    assert create["properties"]["title"]["minLength"] == 1


def test_every_response_header_has_a_typed_schema(document: dict[str, Any]) -> None:
    headers = response_headers(document)
    untyped = [key for key, header in headers.items() if "type" not in header.get("schema", {})]

    assert headers
    assert untyped == []


@pytest.mark.parametrize(
    ("operation_id", "status", "name", "schema"),
    [
        ("ListTasks", "200", "X-Total-Count", {"type": "integer", "minimum": 0}),
        ("CreateTask", "201", "Location", {"type": "string", "format": "uri-reference"}),
        ("CreateTask", "201", "ETag", {"type": "string"}),
        ("GetTask", "200", "ETag", {"type": "string"}),
        ("UpdateTask", "200", "ETag", {"type": "string"}),
        ("ToggleTaskCompletion", "200", "ETag", {"type": "string"}),
        ("ExportAccount", "200", "Content-Disposition", {"type": "string"}),
    ],
)
def test_success_headers_are_typed_and_always_sent(
    document: dict[str, Any], operation_id: str, status: str, name: str, schema: dict[str, Any]
) -> None:
    header = response_headers(document)[operation_id, status, name]

    assert header["schema"] == schema
    assert header["required"] is True


@pytest.mark.parametrize(
    ("status", "name"), [("401", "WWW-Authenticate"), ("429", "Retry-After"), ("503", "Retry-After")]
)
def test_problem_responses_document_the_header_that_says_what_to_do(
    document: dict[str, Any], status: str, name: str
) -> None:
    documented = {key: header for key, header in response_headers(document).items() if key[1:] == (status, name)}
    operations_with_status = {
        operation["operationId"]
        for path_item in document["paths"].values()
        for method, operation in path_item.items()
        if method in HTTP_METHODS and status in operation["responses"]
    }

    assert operations_with_status
    assert {operation_id for operation_id, _, _ in documented} == operations_with_status
    expected_type = "integer" if name == "Retry-After" else "string"
    assert {header["schema"]["type"] for header in documented.values()} == {expected_type}


def test_a_documented_header_without_a_known_schema_stops_the_app() -> None:
    @get("/", response_headers=[ResponseHeader(name="X-Undocumented", documentation_only=True)], sync_to_thread=False)
    def handler() -> None:
        return None

    app = Litestar([handler], openapi_config=OpenAPIConfig(title="Test", version="0"))

    with pytest.raises(ImproperlyConfiguredException, match="X-Undocumented"):
        finalize_schema(app)
