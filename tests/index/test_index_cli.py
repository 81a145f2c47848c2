"""`edgeclip index` and `edgeclip search` as commands: output, exit codes, Ctrl-C and kill -9."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

EDGECLIP = [sys.executable, "-m", "edgeclip"]


def run(*args: str | Path, check: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*EDGECLIP, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert result.returncode == check, result.stderr
    assert "Traceback" not in result.stderr
    return result


def rows(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        try:
            return [r[0] for r in connection.execute("SELECT id FROM items")]
        except sqlite3.OperationalError:  # the indexer has created the file but not its tables yet
            return []


def test_index_then_search_by_text_and_image(tmp_path: Path, collection: Path, documents: Path, tiny_bundle: Path) -> None:
    db = tmp_path / "photos.db"
    first = run("index", db, collection, documents, "--bundle", tiny_bundle, "--dim", "32", "--quiet")
    assert "10 added, 0 changed, 0 unchanged, 0 removed, 0 failed; 10 items (6 images, 4 texts)" in first.stderr
    assert "skipped by extension: 1 .bin" in first.stderr
    again = run("index", db, collection, documents, "--bundle", tiny_bundle, "--quiet")
    assert "0 added, 0 changed, 10 unchanged, 0 removed" in again.stderr
    text = run("search", db, "foca en una roca", "-k", "3", "--json")
    results = json.loads(text.stdout)
    assert [r["rank"] for r in results] == [1, 2, 3] and results[0]["score"] >= results[-1]["score"]
    assert set(results[0]) == {"rank", "score", "id", "kind", "source", "snippet"}
    seal = collection / "trips" / "coast" / "seal.jpg"
    by_image = run("search", db, "--image", seal, "-k", "2", "--kind", "image")
    rank, score, kind, path = by_image.stdout.splitlines()[0].split()
    assert (rank, kind, path) == ("1", "image", str(seal)) and abs(float(score) - 1) < 2e-3  # float16 storage
    assert "one of them" in run("search", db, "x", "--image", seal, check=2).stderr
    texts = json.loads(run("search", db, "x", "--kind", "text", "--json").stdout)
    assert len(texts) == 4 and {r["kind"] for r in texts} == {"text"}


def test_the_gallery_page_escapes_names_and_needs_nothing_from_outside(tmp_path: Path, collection: Path,
                                                                       tiny_bundle: Path) -> None:
    db = tmp_path / "photos.db"
    run("index", db, collection, "--bundle", tiny_bundle, "--quiet")
    page = tmp_path / "results.html"
    run("search", db, "<script>alert(1)</script>", "-k", "20", "--html", page)
    html = page.read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x onerror" not in html and "&lt;img src=x onerror=alert(1)&gt;.png" in html
    assert html.count('<img alt="" src="data:image/jpeg;base64,') == 6  # every image inline, no outside assets
    assert "http://" not in html and "https://" not in html


def test_a_mismatched_bundle_is_refused_with_exit_2(tmp_path: Path, collection: Path, tiny_bundle: Path) -> None:
    db = tmp_path / "photos.db"
    run("index", db, collection / "notes.md", "--bundle", tiny_bundle, "--dim", "16", "--quiet")
    refused = run("index", db, collection, "--bundle", tiny_bundle, "--dim", "32", check=2)
    assert "dim 16 (asked 32)" in refused.stderr
    assert "is not an index" in run("search", tmp_path / "missing.db", "x", check=2).stderr


def many_photos(root: Path, count: int) -> None:
    root.mkdir()
    for i in range(count):
        Image.new("RGB", (64 + i % 7, 48), (i % 256, (i * 7) % 256, 90)).save(root / f"{i:04d}.png")


@pytest.mark.parametrize("how", ["sigint", "kill -9"])
def test_an_interrupted_index_resumes_with_every_file_once(tmp_path: Path, tiny_bundle: Path, how: str) -> None:
    photos, db = tmp_path / "photos", tmp_path / "photos.db"
    many_photos(photos, 400)
    process = subprocess.Popen([*EDGECLIP, "index", str(db), str(photos), "--bundle", str(tiny_bundle), "--quiet"],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (db.exists() and len(rows(db)) >= 8):
        assert process.poll() is None and time.monotonic() < deadline, "the indexer ended before it could be interrupted"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
    code = process.wait(60)
    assert code == (130 if how == "sigint" else -9)
    kept = rows(db)
    assert 0 < len(kept) < 400 and len(kept) == len(set(kept))  # the file opens; what was committed is there once
    rerun = run("index", db, photos, "--bundle", tiny_bundle, "--quiet")
    assert f"{400 - len(kept)} added, 0 changed, {len(kept)} unchanged" in rerun.stderr
    final = rows(db)
    assert sorted(final) == sorted(str(p) for p in photos.iterdir()) and len(final) == 400


def test_index_from_parquet_loads_embeddings_computed_elsewhere(tmp_path: Path, collection: Path, tiny_bundle: Path) -> None:
    pytest.importorskip("pyarrow")
    emb = tmp_path / "emb.parquet"
    run("embed", tiny_bundle, "--image-dir", collection / "trips", "--out", emb, "--quiet")
    db = tmp_path / "loaded.db"
    first = run("index", db, "--from-parquet", emb, "--bundle", tiny_bundle, "--dim", "32")
    assert "5 added, 0 changed, 0 unchanged" in first.stderr and "5 items (5 images, 0 texts)" in first.stderr
    assert "0 added, 0 changed, 5 unchanged" in run("index", db, "--from-parquet", emb, "--bundle", tiny_bundle).stderr
    # The loaded vectors are what indexing the same files computes: searching by one of them finds it first.
    seal = collection / "trips" / "coast" / "seal.jpg"
    found = json.loads(run("search", db, "--image", seal, "-k", "1", "--json", "--exact").stdout)
    assert found[0]["id"] == str(seal) and found[0]["score"] > 0.999
    # Rows from another bundle or a narrower dim are refused with the reason.
    narrow = tmp_path / "narrow.parquet"
    run("embed", tiny_bundle, "--image-dir", collection / "trips", "--out", narrow, "--dim", "32", "--quiet")
    wide_db = tmp_path / "wide.db"
    refused = run("index", wide_db, "--from-parquet", narrow, "--bundle", tiny_bundle, check=2)
    assert "dim 32 (index: 64" in refused.stderr
    assert "give SOURCE" in run("index", db, "--bundle", tiny_bundle, check=2).stderr
