"""Headless Chromium as the frontend: a page on another origin signs in with Better Auth and calls the API,
and the Scalar docs render without touching any host but this one."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from app.docs import ASSETS_DIR, SCALAR_BUNDLE
from tests.support.better_auth import BetterAuth
from tests.support.databases import stored_for
from tests.support.prerequisites import require
from tests.support.servers import ApiServer, free_port

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require(Path(CHROMIUM).is_file(), f"Chromium is not installed at {CHROMIUM} (Debian package 'chromium')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def foreign_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A page on an origin that CORS_ORIGINS does not list."""
    root = tmp_path_factory.mktemp("foreign")
    (root / "index.html").write_text("<!doctype html><title>not the frontend</title><p>elsewhere</p>")
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), partial(SimpleHTTPRequestHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_frontend_page_signs_in_and_manages_tasks_across_origins(
    page: Page, better_auth: BetterAuth, api_server: ApiServer
) -> None:
    page.goto(f"{better_auth.origin}/app/?api={api_server.url}&email=browser-{id(page)}@interop.example")
    page.wait_for_function("() => window.__result !== undefined", timeout=20_000)
    result: dict[str, Any] = page.evaluate("() => window.__result")

    assert result["ok"], result
    steps = {step["step"]: step for step in result["steps"]}
    created_id = steps["create"]["id"]
    assert steps["create"]["location"] == f"/api/{result['userId']}/tasks/{created_id}"  # exposed header
    assert steps["list"] == {"step": "list", "ids": [created_id], "total": 1}  # X-Total-Count exposed
    assert steps["toggle"]["completed"] is True
    assert steps["update"]["title"] == "Renamed by the browser"
    assert steps["delete"]["total"] == 0


def test_a_page_from_an_origin_not_in_cors_origins_is_blocked(
    page: Page, better_auth: BetterAuth, api_server: ApiServer, foreign_origin: str
) -> None:
    user = better_auth.sign_up()
    call = """async ([url, token]) => {
        try {
            const response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
            return `status ${response.status}`;
        } catch (error) {
            return `blocked: ${error.name}`;
        }
    }"""
    url = f"{api_server.url}{user.tasks_url()}"

    page.goto(f"{foreign_origin}/index.html")
    from_foreign = page.evaluate(call, [url, user.token])
    page.goto(f"{better_auth.origin}/app/?api=none")
    from_frontend = page.evaluate(call, [url, user.token])

    assert from_foreign == "blocked: TypeError"
    assert from_frontend == "status 200"


def test_the_docs_list_every_operation_without_leaving_loopback(page: Page, api_server: ApiServer) -> None:
    require((ASSETS_DIR / SCALAR_BUNDLE).is_file(), "the Scalar bundle is not installed (just docs-assets)")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(f"{api_server.url}/schema/scalar")
    for summary in ("List tasks", "Create a task", "Get a task", "Update a task", "Delete a task", "Toggle completion"):
        page.get_by_text(summary, exact=True).first.wait_for(timeout=20_000)
    # Scalar keeps a connection open, so "network idle" never comes; fonts, icons or telemetry would be
    # requested while it renders, which is over once the operations are on the page. Allow a moment more.
    page.wait_for_timeout(1000)

    outside = [
        url for url in requested if urlsplit(url).scheme in {"http", "https"} and urlsplit(url).hostname not in LOOPBACK
    ]
    assert outside == []
    assert f"{api_server.url}/schema/assets/{SCALAR_BUNDLE}" in requested
    assert f"{api_server.url}/schema/openapi.json" in requested


def open_scenario(page: Page, better_auth: BetterAuth, api_server: ApiServer, scenario: str, **query: str) -> Any:
    """Open the frontend page on ``scenario`` and wait for its outcome (``window.__result``)."""
    params = "&".join(
        f"{name}={value}" for name, value in {"api": api_server.url, "scenario": scenario, **query}.items()
    )
    page.goto(f"{better_auth.origin}/app/?{params}")
    page.wait_for_function("() => window.__result !== undefined", timeout=20_000)
    result = page.evaluate("() => window.__result")
    assert result["ok"], result
    return result


def test_a_tab_sees_a_change_made_in_another_tab_live(
    browser: Browser, better_auth: BetterAuth, api_server: ApiServer
) -> None:
    context = browser.new_context()  # one browser profile: both tabs share the Better Auth session cookie
    try:
        listener, writer = context.new_page(), context.new_page()
        signed_up = open_scenario(
            writer, better_auth, api_server, "sign-up", email=f"tabs-{id(context)}@interop.example"
        )
        listening = open_scenario(listener, better_auth, api_server, "sync-listen")
        written = open_scenario(writer, better_auth, api_server, "sync-write")

        # Wait on the event itself (the stream delivers it within a second; the benchmark measures how fast).
        listener.wait_for_function(
            "(id) => window.__changes.some((change) => change.task?.id === id)", arg=written["id"], timeout=10_000
        )
        change = listener.evaluate("(id) => window.__changes.find((c) => c.task?.id === id)", written["id"])
        replica = listener.evaluate("() => window.__replica()")
    finally:
        context.close()

    assert listening["userId"] == written["userId"] == signed_up["userId"]
    assert change["op"] == "upsert"
    assert change["revision"] > listening["revision"]
    assert [task["title"] for task in replica] == ["Made in another tab"]
    print(f"\nanother tab's change seen after {change['seenAt'] - written['writtenAt']} ms")


def test_a_user_pages_exports_and_deletes_their_account_from_the_browser(
    page: Page, better_auth: BetterAuth, api_server: ApiServer, interop_database_url: str
) -> None:
    page.goto(
        f"{better_auth.origin}/app/?api={api_server.url}&scenario=account&email=leaving-{id(page)}@interop.example"
    )
    page.wait_for_function("() => window.__result !== undefined", timeout=20_000)
    result: dict[str, Any] = page.evaluate("() => window.__result")

    assert result["ok"], result
    assert result["pages"] == [["five", "four"], ["three", "two"], ["one"]]  # Link followed across origins
    assert result["disposition"] == 'attachment; filename="todo-export.json"'  # exposed header
    assert result["exported"] == ["one", "two", "three", "four", "five"]
    assert result["user"]["id"] == result["userId"]
    assert result["user"]["email"].startswith("leaving-")
    assert set(stored_for(interop_database_url, result["userId"]).values()) == {0}  # erased by the hook
