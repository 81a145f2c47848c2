"""Index: build, search (checked against an independent numpy ranking), incremental updates, refusals."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import edgeclip
from edgeclip.errors import InputError
from edgeclip.index import Index


def files_of(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.suffix in (".png", ".jpg", ".md", ".txt"))


def test_edgeclip_index_is_the_same_class_and_loads_only_when_used() -> None:
    import subprocess
    import sys

    assert edgeclip.Index is Index
    code = "import sys, edgeclip; assert 'edgeclip.index' not in sys.modules and 'sqlite3' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_indexes_images_and_documents_and_finds_an_image_by_itself(tmp_path: Path, collection: Path, documents: Path,
                                                                    model: edgeclip.EdgeClip) -> None:
    with Index(tmp_path / "i.db", model) as index:
        report = index.add([collection, documents])
        assert (report.added, report.changed, report.unchanged, report.removed, report.failed) == (10, 0, 0, 0, [])
        assert index.stats()["images"] == 6 and index.stats()["texts"] == 4
        seal = str(collection / "trips" / "coast" / "seal.jpg")
        hits = index.search(image=seal, k=3, kind="image")
        assert hits[0].id == seal and hits[0].score == pytest.approx(1.0, abs=2e-3)  # float16 storage
        assert [h.rank for h in hits] == [1, 2, 3] and all(h.kind == "image" for h in hits)
        assert {h.kind for h in index.search(text="foca", k=10, kind="text")} == {"text"}
        doc = next(h for h in index.search(text="x", k=10) if h.id == "d2")
        assert doc.source == str(documents) and doc.snippet == "岩の上のアザラシ"


def test_search_ranks_exactly_as_numpy_does(tmp_path: Path, collection: Path, documents: Path, model: edgeclip.EdgeClip) -> None:
    """The ranking is checked against vectors computed here, independently of the index's code."""
    with Index(tmp_path / "i.db", model, dim=32) as index:
        index.add([collection, documents])
        query = "una foca sobre una roca"
        ids, rows = [], []
        for path in files_of(collection):
            ids.append(path)
            if path.endswith((".md", ".txt")):
                rows.append(model.encode_text([Path(path).read_text(encoding="utf-8")], truncate_dim=32)[0])
            else:
                rows.append(model.encode_image([path], truncate_dim=32)[0])
        for item_id, text in (("d1", "Una foca descansa sobre una roca."), ("d2", "岩の上のアザラシ")):
            ids.append(item_id)
            rows.append(model.encode_text([text], truncate_dim=32)[0])
        q = model.encode_text([query], task="retrieval.query", truncate_dim=32)[0]
        scores = np.stack(rows).astype(np.float16).astype(np.float32) @ q
        expected = [ids[i] for i in np.argsort(-scores, kind="stable")[:5]]
        for exact in (True, False):  # 10 items < the coarse pass's 200 candidates: the same answer
            hits = index.search(text=query, k=5, exact=exact)
            assert [h.id for h in hits] == expected
            np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1][:5], atol=1e-5)



def test_incremental_updates(tmp_path: Path, collection: Path, model: edgeclip.EdgeClip) -> None:
    db = tmp_path / "i.db"
    with Index(db, model) as index:
        assert index.add([collection]).added == 8
        again = index.add([collection])
        assert (again.added, again.changed, again.unchanged, again.removed) == (0, 0, 8, 0)
        new = collection / "trips" / "p9.png"
        shutil.copy(collection / "trips" / "p0.png", new)  # a new file
        os.utime(collection / "trips" / "p1.png", ns=(1, 10**18))  # touched only: same bytes, new mtime
        (collection / "notes.md").write_text("Changed: the seal left the rock.", encoding="utf-8")
        (collection / "trips" / "plan.txt").unlink()
        report = index.add([collection])
        assert (report.added, report.changed, report.unchanged, report.removed) == (1, 1, 6, 1)
        assert index.stats()["items"] == 8
        assert str(collection / "trips" / "plan.txt") not in {h.id for h in index.search(text="ferry", k=20)}
        notes = next(h for h in index.search(text="seal", k=20) if h.id == str(collection / "notes.md"))
        assert notes.snippet.startswith("Changed:")
        assert index.remove([str(new)]) == 1 and index.stats()["items"] == 7


def test_excluded_globs_are_left_out(tmp_path: Path, collection: Path, model: edgeclip.EdgeClip) -> None:
    with Index(tmp_path / "i.db", model) as index:
        report = index.add([collection], exclude=["*.md", "*/coast/*"])
        assert report.added == 6
        ids = {h.id for h in index.search(text="x", k=20)}
        assert str(collection / "notes.md") not in ids and str(collection / "trips" / "coast" / "seal.jpg") not in ids


def test_an_index_refuses_other_settings_and_bundles(tmp_path: Path, collection: Path, model: edgeclip.EdgeClip,
                                                     tiny_bundle: Path) -> None:
    db = tmp_path / "i.db"
    with Index(db, model, dim=32) as index:
        index.add([collection / "trips" / "p0.png"])
    with pytest.raises(InputError, match="dim 32 .asked 64"):
        Index(db, model, dim=64)
    with pytest.raises(InputError, match="precision 'float16' .asked 'binary'"):
        Index(db, model, precision="binary")
    other = tmp_path / "other-bundle"
    shutil.copytree(tiny_bundle, other)
    (other / "manifest.json").write_text((other / "manifest.json").read_text() + "\n")  # another manifest checksum
    with pytest.raises(InputError, match="bundle_sha256 .* cannot be compared"):
        Index(db, edgeclip.load(other))
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(InputError, match="not an edgeclip index"):
        Index(tmp_path / "junk.db", model)


def test_an_interrupted_index_loses_nothing_and_a_rerun_completes_it(tmp_path: Path, collection: Path,
                                                                     model: edgeclip.EdgeClip) -> None:
    for i in range(20):
        from PIL import Image

        Image.new("RGB", (40 + i, 30), (i * 10, 50, 90)).save(collection / f"extra{i}.png")
    stop = threading.Event()
    done = []

    def progress(n: int) -> None:
        done.append(n)
        if sum(done) >= 6:
            stop.set()

    with Index(tmp_path / "i.db", model) as index:
        first = index.add([collection], stop=stop, progress=progress)
        kept = index.stats()["items"]
        assert first.interrupted and 0 < kept < 28 and first.removed == 0  # nothing removed by a partial scan
        second = index.add([collection])
        assert not second.interrupted and (second.added, second.unchanged) == (28 - kept, kept)
        ids = [row[0] for row in index.store.db.execute("SELECT id FROM items")]
        assert sorted(ids) == files_of(collection) and len(ids) == len(set(ids)) == 28


def test_searches_run_while_an_indexer_writes(tmp_path: Path, collection: Path, model: edgeclip.EdgeClip) -> None:
    for i in range(30):
        from PIL import Image

        Image.new("RGB", (50, 30 + i), (90, i * 8, 20)).save(collection / f"more{i}.png")
    db = tmp_path / "i.db"
    with Index(db, model) as writer:
        writer.add([collection / "notes.md"])
        errors: list[BaseException] = []
        counts: list[int] = []
        finished = threading.Event()

        def search_loop() -> None:
            with Index(db, model, readonly=True) as reader:  # a second writer would be refused
                deadline = time.monotonic() + 60
                while not finished.is_set() and time.monotonic() < deadline:
                    try:
                        counts.append(len(reader.search(text="seal", k=50)))
                    except BaseException as exc:  # noqa: BLE001
                        errors.append(exc)
                        return

        thread = threading.Thread(target=search_loop)
        thread.start()
        writer.add([collection])
        finished.set()
        thread.join(60)
    assert not errors and len(counts) >= 2 and counts == sorted(counts)  # grows as batches commit, never breaks
