"""`edgeclip serve --index DB`: the search page, its JSON endpoint and thumbnails (no browser here;
tests/browser drives the page in Chromium)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

import edgeclip
from edgeclip.index import Index


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("photos")
    for i in range(5):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(root / f"p{i}.png")
    Image.new("RGB", (50, 50), (200, 10, 10)).save(root / "<img src=x onerror=alert(1)>.png")
    (root / "note.md").write_text("<script>alert('doc')</script> a note about seals", encoding="utf-8")
    db = tmp_path_factory.mktemp("index") / "photos.db"
    with Index(db, edgeclip.load(tiny_bundle), bundle_path=tiny_bundle) as index:
        index.add([root])
    return db, root


def test_the_page_is_self_contained(serve: Any, tiny_bundle: Path, indexed: tuple[Path, Path]) -> None:
    with serve(tiny_bundle, index=indexed[0]) as base:
        page = requests.get(f"{base}/", timeout=10)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "http://" not in page.text and "https://" not in page.text and "src=\"//" not in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "innerHTML" not in page.text  # results are built with textContent


def test_search_by_text_and_by_an_indexed_image(serve: Any, tiny_bundle: Path, indexed: tuple[Path, Path]) -> None:
    db, root = indexed
    with serve(tiny_bundle, index=db) as base:
        found = requests.get(f"{base}/v1/search", params={"q": "foca", "k": 10}, timeout=30).json()["results"]
        assert len(found) == 7 and [r["rank"] for r in found] == list(range(1, 8))
        image = next(r for r in found if r["kind"] == "image")
        thumb = requests.get(f"{base}{image['thumbnail']}", timeout=30)
        assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).format == "JPEG"
        like = requests.get(f"{base}/v1/search", params={"image_id": image["id"], "kind": "image"}, timeout=30).json()
        assert like["results"][0]["id"] == image["id"]  # an image is its own nearest neighbour
        doc = next(r for r in found if r["kind"] == "text")
        assert doc["thumbnail"] is None and doc["snippet"].startswith("<script>")  # JSON carries it as text


@pytest.mark.parametrize("item_id", ["/etc/passwd", "../../etc/passwd", "p0.png", "NOTE", "%2e%2e/%2e%2e/etc/passwd", ""])
def test_thumbnails_come_only_from_indexed_images(serve: Any, tiny_bundle: Path, indexed: tuple[Path, Path],
                                                  item_id: str) -> None:
    db, root = indexed
    with serve(tiny_bundle, index=db) as base:
        value = str(root / "note.md") if item_id == "NOTE" else item_id  # a document is not an image either
        response = requests.get(f"{base}/v1/thumbnail", params={"id": value}, timeout=10)
        assert response.status_code in (404, 422) and "image/jpeg" not in response.headers["content-type"]


def test_with_a_key_the_page_and_its_endpoints_need_it(serve: Any, tiny_bundle: Path, indexed: tuple[Path, Path]) -> None:
    with serve(tiny_bundle, index=indexed[0], api_key="k3y") as base:
        for path in ("/", "/v1/search?q=x", "/v1/thumbnail?id=x"):
            refused = requests.get(f"{base}{path}", timeout=10)
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
            assert requests.get(f"{base}{path}", auth=("me", "wrong"), timeout=10).status_code == 401
        assert requests.get(f"{base}/", auth=("anyone", "k3y"), timeout=10).status_code == 200  # the browser's prompt
        assert requests.get(f"{base}/v1/search?q=x", headers={"Authorization": "Bearer k3y"}, timeout=30).status_code == 200
        basic = "Basic " + base64.b64encode(b"me:k3y").decode()
        assert requests.post(f"{base}/v1/embeddings", json={"input": "x"}, headers={"Authorization": basic},
                             timeout=10).status_code == 401  # the API itself takes the Bearer header only


def test_an_index_from_another_bundle_or_a_missing_one_stops_the_server_at_start(tmp_path: Path, tiny_bundle: Path,
                                                                                 indexed: tuple[Path, Path]) -> None:
    import shutil
    import subprocess
    import sys

    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    (other / "manifest.json").write_text((other / "manifest.json").read_text() + "\n")
    for bundle, db, message in ((other, indexed[0], "built with other settings"), (tiny_bundle, tmp_path / "none.db", "no such index")):
        result = subprocess.run([sys.executable, "-m", "edgeclip", "serve", str(bundle), "--port", "0", "--index", str(db)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
