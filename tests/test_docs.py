"""The documentation stays true: frontend snippets are the tested code, and the docs page works offline."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from app.config import Settings, parse_database_url
from app.docs import ASSETS_PATH, SCALAR_BUNDLE, SCALAR_CDN_URL, SCALAR_VERSION, ScalarDocs

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = re.compile(r"<!-- snippet: (?P<path>\S+) -->\n```\w*\n(?P<code>.*?)```", re.DOTALL)
FENCE = re.compile(r"^```\w*$", re.MULTILINE)


@pytest.mark.parametrize("document", ["docs/frontend.md"])
def test_every_code_block_is_an_excerpt_of_a_tested_file(document: str) -> None:
    text = (ROOT / document).read_text()
    snippets = list(SNIPPET.finditer(text))

    assert len(snippets) * 2 == len(FENCE.findall(text)), "a code block without a snippet marker"
    for snippet in snippets:
        source = (ROOT / snippet["path"]).read_text()
        assert snippet["code"] in source, f"{document}: block no longer in {snippet['path']}:\n{snippet['code']}"


def test_docs_page_uses_the_local_bundle_when_installed(tmp_path: Path) -> None:
    (tmp_path / SCALAR_BUNDLE).write_text("/* bundle */")

    plugin = ScalarDocs(assets_dir=tmp_path)

    assert plugin.js_url == f"{ASSETS_PATH}/{SCALAR_BUNDLE}"
    assert plugin.css_url == f"{ASSETS_PATH}/scalar.css"


def test_docs_page_falls_back_to_the_same_pinned_version_on_the_cdn(tmp_path: Path) -> None:
    plugin = ScalarDocs(assets_dir=tmp_path)

    assert plugin.js_url == SCALAR_CDN_URL
    assert f"@{SCALAR_VERSION}/" in plugin.js_url
    assert plugin.css_url.startswith(ASSETS_PATH)  # the stylesheet is always ours
    assert "http" not in plugin.favicon


async def test_the_docs_page_and_its_stylesheet_are_served_without_a_token(client: httpx.AsyncClient) -> None:
    page = await client.get("/schema/scalar")
    stylesheet = await client.get(f"{ASSETS_PATH}/scalar.css")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'data-url="/schema/openapi.json"' in page.text  # the document of this origin
    assert f'href="{ASSETS_PATH}/scalar.css"' in page.text
    assert stylesheet.status_code == 200
    assert stylesheet.headers["content-type"].startswith("text/css")


# --- docs/deploy.md -----------------------------------------------------------------------------------------

DEPLOY = ROOT / "docs" / "deploy.md"
SETTING = re.compile(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+|HOST|PORT)(?:=[^`]*)?`")  # DATABASE_URL, HOST=0.0.0.0
TEST_REFERENCE = re.compile(r"`(?:(tests/[\w/]+\.py)(?:::(\w+))?|(test_\w+))`")


def test_deploy_guide_names_only_real_settings() -> None:
    named = set(SETTING.findall(DEPLOY.read_text()))

    assert named <= {field.upper() for field in Settings.__struct_fields__}, named
    assert {"DATABASE_URL_UNPOOLED", "DATABASE_PING_AFTER_IDLE_SECONDS", "DATABASE_STARTUP_TIMEOUT"} <= named


def test_deploy_guide_cites_tests_that_exist() -> None:
    sources = {path: path.read_text() for path in (ROOT / "tests").rglob("test_*.py")}
    cited = TEST_REFERENCE.findall(DEPLOY.read_text())

    assert len(cited) >= 10
    for path, name, bare in cited:
        if path:
            assert (ROOT / path).is_file(), path
        test = name or bare
        if test:
            where = [ROOT / path] if path else list(sources)
            assert any(re.search(rf"def {test}\(", sources[p]) for p in where), f"docs/deploy.md cites {test}"


def test_deploy_guide_connection_strings_mean_what_it_says() -> None:
    block = re.search(r"```sh\n(DATABASE_URL=.*?)```", DEPLOY.read_text(), re.DOTALL)
    assert block is not None
    urls = dict(line.split("=", 1) for line in block[1].strip().splitlines())
    pooled = parse_database_url(urls["DATABASE_URL"].strip("'"))
    direct = parse_database_url(urls["DATABASE_URL_UNPOOLED"].strip("'"))

    assert (pooled.pooler, direct.pooler) == (True, False)
    assert pooled.connect_args["ssl"] == direct.connect_args["ssl"] == "require"
    assert "channel_binding" not in pooled.url
