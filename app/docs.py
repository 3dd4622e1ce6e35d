"""The Scalar API reference at ``/schema/scalar``, working without a CDN.

Litestar's Scalar page loads its JavaScript, CSS, favicon and fonts from CDNs, so it is blank on an
offline or locked-down network. Here the page loads Scalar's standalone bundle from this service
(``/schema/assets/``), fetched once by ``just docs-assets`` (``npm pack`` of a pinned version, checked
against a pinned integrity hash, never committed), and only falls back to the same pinned version on the
CDN when that file is absent.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from litestar import Response, Router
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.static_files import create_static_files_router

__all__ = (
    "ASSETS_DIR",
    "SCALAR_VERSION",
    "ScalarDocs",
    "docs_assets_router",
    "install_scalar_bundle",
)

logger = logging.getLogger(__name__)

#: Pinned; bump together with SCALAR_INTEGRITY (``npm view @scalar/api-reference@<v> dist.integrity``).
SCALAR_VERSION = "1.72.1"
SCALAR_INTEGRITY = "sha512-XpEJ0rfc/cXbCrR+iC4kK0o/WwX2dTtGQbT049OlPKAHD6IMIFdTeGz2r+M27P2EDWKyUITRm/NzlP8z2pw/Ow=="
SCALAR_BUNDLE = f"scalar-api-reference-{SCALAR_VERSION}.js"
SCALAR_CDN_URL = f"https://cdn.jsdelivr.net/npm/@scalar/api-reference@{SCALAR_VERSION}/dist/browser/standalone.js"

#: Where ``just docs-assets`` puts the bundle (git-ignored) next to the committed stylesheet.
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "scalar"
ASSETS_PATH = "/schema/assets"


class ScalarDocs(ScalarRenderPlugin):
    """Scalar, served from this origin when the bundle is installed; nothing else is loaded from elsewhere."""

    def __init__(self, assets_dir: Path = ASSETS_DIR) -> None:
        local = (assets_dir / SCALAR_BUNDLE).is_file()
        if not local:
            logger.warning(
                "Scalar bundle %s not installed (run `just docs-assets`); /schema/scalar loads it from the CDN",
                SCALAR_BUNDLE,
            )
        super().__init__(
            version=SCALAR_VERSION,
            js_url=f"{ASSETS_PATH}/{SCALAR_BUNDLE}" if local else SCALAR_CDN_URL,
            css_url=f"{ASSETS_PATH}/scalar.css",
            # Scalar's default fonts come from fonts.scalar.com; the system fonts do fine.
            options={"withDefaultFonts": False, "hideClientButton": True},
            favicon='<link rel="icon" href="data:,">',
        )
        self.local = local

    def receive_router(self, router: Router) -> None:
        """Answer unknown ``/schema/…`` paths like every other 404 (Litestar's catch-all there returns HTML)."""
        super().receive_router(router)
        router.after_request = _html_not_found_as_problem


async def _html_not_found_as_problem(response: Response[Any]) -> Response[Any]:
    # Raised, not built here: the exception handlers in app/errors.py give it the body of the router's own 404.
    if response.status_code == 404:
        raise NotFoundException
    return response


def docs_assets_router(assets_dir: Path = ASSETS_DIR) -> Router:
    """Serve the docs' stylesheet and, once installed, the Scalar bundle; cached for a day."""
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[assets_dir],
        opt={"exclude_from_auth": True},
        include_in_schema=False,
        name="docs-assets",
    )


def install_scalar_bundle(assets_dir: Path = ASSETS_DIR) -> Path:
    """Fetch the pinned Scalar package with ``npm pack``, verify its integrity and keep only the bundle."""
    target = assets_dir / SCALAR_BUNDLE
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to fetch the Scalar bundle")
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(  # noqa: S603 - fixed arguments, pinned package
            [npm, "pack", f"@scalar/api-reference@{SCALAR_VERSION}", "--pack-destination", scratch, "--silent"],
            check=True,
            capture_output=True,
        )
        tarball = next(Path(scratch).glob("*.tgz"))
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if digest != SCALAR_INTEGRITY:
            raise RuntimeError(f"@scalar/api-reference@{SCALAR_VERSION}: integrity {digest} != {SCALAR_INTEGRITY}")
        with tarfile.open(tarball) as archive:
            member = archive.extractfile("package/dist/browser/standalone.js")
            if member is None:  # pragma: no cover - the package layout is pinned with its version
                raise RuntimeError("standalone.js missing from the Scalar package")
            assets_dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part")
            partial.write_bytes(member.read())
            partial.replace(target)
    return target
