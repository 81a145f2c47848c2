"""The search page in a real browser: Debian's Chromium, headless, driven by Playwright.

Type a query, see thumbnails, click one, see similar images; a screenshot is saved as an artifact
(test-artifacts/search-page.png). Skipped where Chromium or Playwright is missing, unless
EDGECLIP_REQUIRE_BROWSER=1 (CI sets it, so there it must run).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import edgeclip
from edgeclip.index import Index

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _need(reason: str) -> None:
    if os.environ.get("EDGECLIP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (EDGECLIP_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright is not installed (pip install playwright; no browser download is needed)")
    if not os.path.exists(CHROMIUM):
        _need("no chromium (apt install chromium)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def photo_index(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(6):
        rng = np.random.default_rng(i)
        tint = rng.integers(40, 255, 3)
        ramp = np.add.outer(np.arange(90), np.arange(120))[..., None] % 64
        Image.fromarray(((ramp * 2 + tint) % 256).astype(np.uint8)).save(root / f"photo{i}.jpg")
    Image.new("RGB", (80, 60), (250, 200, 0)).save(root / "<img src=x onerror=alert(1)>.png")
    (root / "notes.md").write_text("<b>bold?</b> The seal sleeps on the rock.", encoding="utf-8")
    db = tmp_path_factory.mktemp("index") / "photos.db"
    with Index(db, edgeclip.load(tiny_bundle)) as index:
        index.add([root])
    return db


def test_query_thumbnails_and_click_for_similar(playwright: Any, serve: Any, tiny_bundle: Path, photo_index: Path,
                                                tmp_path: Path) -> None:
    with serve(tiny_bundle, index=photo_index, api_key="page-key") as base:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            http_credentials={"username": "me", "password": "page-key"},  # what the browser's login prompt sends
            bypass_csp=True)  # the page's CSP forbids eval, which Playwright's wait_for_function needs
        outside: list[str] = []
        dialogs: list[str] = []
        try:
            page = context.new_page()
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(base) else None)
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{base}/")
            page.fill("#q", "foca en una roca")
            page.press("#q", "Enter")
            page.wait_for_selector("figure.hit")
            assert page.locator("figure.hit").count() == 8
            page.wait_for_function("[...document.images].length == 7 && [...document.images].every(i => i.complete && i.naturalWidth > 0)")
            assert "<img src=x onerror=alert(1)>.png" in page.inner_text("#results")  # shown as text
            assert "<b>bold?</b>" in page.inner_text("#results")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "search-page.png"), full_page=True)
            first = page.locator("figure.hit.image").first
            clicked = first.get_attribute("data-id")
            first.click()
            page.wait_for_function("document.getElementById('status').textContent.startsWith('8 results for images like')")
            assert page.locator("figure.hit").first.get_attribute("data-id") == clicked  # its own nearest neighbour
            assert page.locator("figure.hit.text").count() == 1
        finally:
            context.close()
    assert outside == [] and dialogs == [], (outside, dialogs)  # nothing fetched from elsewhere, no script ran from a name or document


def test_api_docs_render_offline(playwright: Any, serve: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    """/docs is Swagger UI from the installed package: it renders with every request kept on the server
    (FastAPI's default page loads its script from a CDN and is blank offline)."""
    with serve(tiny_bundle) as base:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS)
        outside: list[str] = []
        try:
            page = context.new_page()
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(base) else None)
            page.goto(f"{base}/docs")
            page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
            assert "edgeclip" in page.inner_text(".swagger-ui .info .title")
            page.wait_for_selector("#operations-default-create_embeddings_v1_embeddings_post, .opblock-summary-path")
            assert "/v1/embeddings" in page.inner_text(".swagger-ui")
        finally:
            context.close()
    assert outside == [], outside
