"""The search page in a real browser: Debian's Chromium, headless, driven by Playwright.

Photos / documents / all, captions and sharp thumbnails at device pixel ratio 2, every result reached
with Tab and Enter finding similar ones, errors as one sentence; screenshots are saved as artifacts
(test-artifacts/search-*.png; docs/search-page*.png are copies). Skipped where Chromium or Playwright is missing, unless
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
    for name, (width, height) in {"portrait.jpg": (600, 1400), "panorama.jpg": (1400, 500)}.items():
        ramp = np.add.outer(np.arange(height), np.arange(width))[..., None] * np.array([1, 2, 3])
        Image.fromarray((ramp // 7 % 256).astype(np.uint8)).save(root / name)
    Image.new("RGB", (80, 60), (250, 200, 0)).save(root / "<img src=x onerror=alert(1)>.png")
    (root / "notes.md").write_text("<b>bold?</b> The seal sleeps on the rock.", encoding="utf-8")
    (root / "a-rather-long-file-name-for-the-harbour-walk-notes.txt").write_text("Boats in the harbour.", encoding="utf-8")
    db = tmp_path_factory.mktemp("index") / "photos.db"
    with Index(db, edgeclip.load(tiny_bundle)) as index:
        index.add([root])
    return db


@pytest.fixture()
def page(playwright: Any, serve: Any, tiny_bundle: Path, photo_index: Path, tmp_path: Path) -> Any:
    """The search page in Chromium at device pixel ratio 2; checks afterwards that nothing was fetched
    from elsewhere and no script ran from a file name or document."""
    with serve(tiny_bundle, index=photo_index, api_key="page-key") as base:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS, device_scale_factor=2,
            viewport={"width": 1100, "height": 800},
            http_credentials={"username": "me", "password": "page-key"},  # what the browser's login prompt sends
            bypass_csp=True)  # the page's CSP forbids eval, which Playwright's wait_for_function needs
        outside: list[str] = []
        dialogs: list[str] = []
        try:
            tab = context.new_page()
            tab.on("request", lambda r: outside.append(r.url) if not r.url.startswith(base) else None)
            tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            tab.goto(f"{base}/")
            yield tab
        finally:
            context.close()
    assert outside == [] and dialogs == [], (outside, dialogs)


def query(page: Any, text: str) -> None:
    page.fill("#q", text)
    page.press("#q", "Enter")
    page.wait_for_function("!document.getElementById('status').textContent.startsWith('Searching')")


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


def test_photos_documents_and_all(page: Any) -> None:
    query(page, "foca en una roca")
    assert page.locator("figure.hit").count() == 9 and page.locator("figure.hit.text").count() == 0  # photos first
    page.wait_for_function("[...document.images].length == 9 && [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    shot(page, "search-photos.png")
    page.click("label[for=kind-text]")
    page.wait_for_function("document.querySelectorAll('figure.hit.image').length == 0 && document.querySelectorAll('figure.hit.text').length == 2")
    assert "<b>bold?</b>" in page.inner_text("#results")  # shown as text
    page.click("label[for=kind-all]")
    page.wait_for_function("document.querySelectorAll('figure.hit').length == 11")


def test_captions_are_file_names_and_thumbnails_are_sharp(page: Any) -> None:
    query(page, "a harbour")
    page.wait_for_function("[...document.images].length == 9 && [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    names = page.locator("figcaption .name").all_inner_texts()
    assert "<img src=x onerror=alert(1)>.png" in names and "portrait.jpg" in names  # the name only, as text
    titles = page.locator("figure.hit").evaluate_all("fs => fs.map(f => f.title)")
    assert all(t.startswith("/") for t in titles)  # the full path is in the title
    # each large photo's thumbnail has at least one image pixel per device pixel of the box it fills
    scales = page.evaluate("""() => [...document.images].filter(i => /portrait|panorama/.test(i.alt)).map(i => {
        const scale = Math.min(i.clientWidth / i.naturalWidth, i.clientHeight / i.naturalHeight);
        return [i.alt, scale * devicePixelRatio, i.naturalWidth / i.naturalHeight]; })""")
    assert len(scales) == 2, scales
    for name, device_px_per_image_px, aspect in scales:
        assert device_px_per_image_px <= 1.01, (name, device_px_per_image_px)
        assert abs(aspect - (600 / 1400 if name == "portrait.jpg" else 1400 / 500)) < 0.02  # aspect kept


def test_the_keyboard_reaches_every_result_and_enter_finds_similar(page: Any) -> None:
    query(page, "a photo")
    ids = page.locator("figure.hit").evaluate_all("fs => fs.map(f => f.dataset.id)")
    reached = []
    for _ in range(len(ids) + 6):  # the search box, the switch, the button, then every card
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.dataset.id || ''"))
    assert [r for r in reached if r] == ids
    page.focus("figure.hit.image >> nth=2")
    chosen = page.evaluate("document.activeElement.dataset.id")
    shot(page, "search-keyboard.png")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('status').textContent.includes('photos like')")
    assert page.locator("figure.hit").first.get_attribute("data-id") == chosen  # its own nearest neighbour


def test_an_error_replaces_the_results_with_one_sentence(page: Any) -> None:
    query(page, "a photo")
    assert page.locator("figure.hit").count() > 0
    query(page, "x" * 2500)  # over the query limit: a 422 from the server
    assert page.locator("figure.hit").count() == 0
    assert page.inner_text("#results .error") == "That search could not be run: try a shorter query."
    shot(page, "search-error.png")


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
