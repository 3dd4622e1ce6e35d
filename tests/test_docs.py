"""The documentation stays true: frontend snippets are the tested code, and the docs page works offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
