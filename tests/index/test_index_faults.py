"""The index file under mistakes and damage (issue 25): `search` never creates or changes a file; another
program's file is refused untouched; a damaged one is one line with the rebuild command; one writer at a
time; a failed first run does not pin its settings; a file that can no longer be read leaves the index."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import edgeclip
from edgeclip.errors import InputError
from edgeclip.index import Index

EDGECLIP = [sys.executable, "-m", "edgeclip"]


def run(*args: str | Path, check: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*EDGECLIP, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert result.returncode == check, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3 or check == 0, result.stderr
    return result


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_search_never_creates_a_file(tmp_path: Path, tiny_bundle: Path) -> None:
    missing = tmp_path / "typo.db"
    assert "is not an index" in run("search", missing, "x", check=2).stderr
    assert "is not an index" in run("search", missing, "x", "--bundle", tiny_bundle, check=2).stderr
    assert not missing.exists() and not list(tmp_path.iterdir())


def test_another_programs_sqlite_file_is_refused_untouched(tmp_path: Path, tiny_bundle: Path, collection: Path) -> None:
    other = tmp_path / "contacts.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE people (name TEXT)")
        db.execute("INSERT INTO people VALUES ('Ada')")
    before = digest(other)
    for args in (("search", other, "x", "--bundle", tiny_bundle), ("index", other, collection, "--bundle", tiny_bundle, "--quiet")):
        assert "is not an edgeclip index (it holds people)" in run(*args, check=2).stderr
        assert digest(other) == before
    text = tmp_path / "thesis.txt"
    text.write_text("chapter one " * 2000, encoding="utf-8")
    before = digest(text)
    assert "not an edgeclip index" in run("index", text, collection, "--bundle", tiny_bundle, "--quiet", check=2).stderr
    assert digest(text) == before


def test_a_damaged_index_is_one_line_with_the_rebuild_command(tmp_path: Path, tiny_bundle: Path, collection: Path) -> None:
    db = tmp_path / "photos.db"
    run("index", db, collection, "--bundle", tiny_bundle, "--quiet")
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 16384
    assert len(data) > 2 * page
    data[page:2 * page] = b"\xa5" * page  # the page after the header's: catalogue b-tree pages
    db.write_bytes(bytes(data))
    refused = run("search", db, "seal", check=2).stderr
    assert "is damaged" in refused and f"edgeclip index {db} SOURCE" in refused


def test_one_writer_at_a_time_and_readers_alongside(tmp_path: Path, collection: Path, model: edgeclip.EdgeClip) -> None:
    db = tmp_path / "photos.db"
    with Index(db, model) as writer:
        writer.add([collection / "notes.md"])
        with pytest.raises(InputError, match="another edgeclip job is writing"):
            Index(db, model)
        with Index(db, model, readonly=True) as reader:  # searching is fine meanwhile
            assert reader.search(text="seal", k=5)
    with Index(db, model) as again:  # released when the first closed
        assert again.stats()["items"] == 1


def test_a_failed_first_run_leaves_nothing_that_pins_its_settings(tmp_path: Path, tiny_bundle: Path, collection: Path) -> None:
    db = tmp_path / "photos.db"
    assert "no such file or folder" in run("index", db, tmp_path / "colection", "--bundle", tiny_bundle, "--quiet", check=2).stderr
    assert not db.exists()  # a typo'd source: the file is never made
    model = edgeclip.load(tiny_bundle)
    Index(db, model, dim=16).close()  # made, with dim 16, and nothing in it (as a run killed before its first batch)
    run("index", db, collection, "--bundle", tiny_bundle, "--quiet")  # the next run's settings are taken
    with Index(db, model, readonly=True) as index:
        assert index.settings.dim == model.output_dim("text") and index.stats()["items"] > 0


def test_a_file_that_cannot_be_read_any_more_leaves_the_index(tmp_path: Path, tiny_bundle: Path, collection: Path) -> None:
    db = tmp_path / "photos.db"
    run("index", db, collection, "--bundle", tiny_bundle, "--quiet")
    seal = collection / "trips" / "coast" / "seal.jpg"
    seal.write_bytes(b"not a jpeg any more")
    result = run("index", db, collection, "--bundle", tiny_bundle, "--quiet", check=1)
    assert f"failed: {seal}" in result.stderr and "1 removed" in result.stderr
    found = run("search", db, "--image", collection / "trips" / "p0.png", "-k", "50", "--json").stdout
    assert str(seal) not in found
    Image.new("RGB", (40, 30), (1, 2, 3)).save(seal)  # readable again: back in
    assert "1 added" in run("index", db, collection, "--bundle", tiny_bundle, "--quiet").stderr


def test_images_named_by_a_jsonl_file_keep_their_own_path(tmp_path: Path, model: edgeclip.EdgeClip) -> None:
    photo = tmp_path / "pics" / "seal.png"
    photo.parent.mkdir()
    Image.new("RGB", (48, 32), (120, 60, 30)).save(photo)
    records = tmp_path / "docs.jsonl"
    records.write_text('{"id": "s1", "image": "pics/seal.png"}\n{"id": "d1", "text": "a seal on a rock"}\n', encoding="utf-8")
    db = tmp_path / "i.db"
    with Index(db, model) as index:
        index.add([records])
        found = {r.id: r for r in index.search(image=str(photo), k=5)}
        assert found["s1"].source == str(photo) and index.image_source("s1") == str(photo)  # shown and thumbnailed
        assert found["d1"].source == str(records)
        records.write_text('{"id": "d1", "text": "a seal on a rock"}\n', encoding="utf-8")  # the image's record removed
        assert index.add([records]).removed == 1
        assert index.image_source("s1") is None
