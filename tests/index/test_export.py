"""`edgeclip export`: an index to parquet (read back by `index --from-parquet`) and to a LanceDB table, with the
same items, vectors and ranking; never half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeclip.cli import main
from edgeclip.index import export as export_module
from edgeclip.index import open_index

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet  # noqa: F401


@pytest.fixture()
def index_db(tiny_bundle: Path, collection: Path, documents: Path, tmp_path: Path) -> Path:
    db = tmp_path / "photos.db"
    assert main(["index", str(db), str(collection), str(documents), "--bundle", str(tiny_bundle), "--quiet"]) == 0
    return db


def ranked(db: Path, query: str, k: int = 20) -> list[tuple[str, float]]:
    with open_index(db) as index:
        return [(r.id, r.score) for r in index.search(text=query, k=k, exact=True)]


def test_parquet_round_trips_through_index_from_parquet(index_db: Path, tiny_bundle: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "items.parquet"
    assert main(["export", str(index_db), "--to", "parquet", "--out", str(out)]) == 0
    table = pa.parquet.read_table(out)
    assert set(table.column_names) >= {"id", "kind", "dim", "fingerprint", "embedding", "source", "snippet"}
    assert json.loads(table.schema.metadata[b"edgeclip"])["precision"] == "float16"
    again = tmp_path / "again.db"
    assert main(["index", str(again), "--from-parquet", str(out), "--bundle", str(tiny_bundle)]) == 0
    for query in ("a seal on a rock", "una foca"):
        assert ranked(again, query) == ranked(index_db, query)  # the same float16 rows: the same scores, bit for bit
    assert main(["export", str(index_db), "--to", "parquet", "--out", str(tmp_path / "no" / "x.parquet")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", str(index_db), "--to", "parquet", "--out", str(out)]) == 2  # exists: refused, kept
    assert "--overwrite" in capsys.readouterr().err and pa.parquet.read_table(out).num_rows == table.num_rows


def test_lancedb_table_holds_the_index_and_ranks_like_it(index_db: Path, tmp_path: Path) -> None:
    lancedb = pytest.importorskip("lancedb")
    import edgeclip.integrations.lancedb  # noqa: F401  (the table's queries embed through it)

    out = tmp_path / "lance"
    assert main(["export", str(index_db), "--to", "lancedb", "--out", str(out)]) == 0
    table = lancedb.connect(out).open_table("items")
    with open_index(index_db) as index:
        stats = index.stats()
        query = index.query_vector(text="a seal on a rock")
        want = [(r.id, r.score) for r in index.search(text="a seal on a rock", k=stats["items"], exact=True)]
    assert table.count_rows() == stats["items"]
    by_vector = table.search(query).metric("cosine").limit(len(want)).to_list()
    np.testing.assert_allclose([1 - r["_distance"] for r in by_vector], [s for _, s in want], atol=2e-3)  # float16 rows
    by_text = table.search("a seal on a rock").metric("cosine").limit(len(want)).to_list()  # embedded by "edgeclip"
    np.testing.assert_allclose([r["_distance"] for r in by_text], [r["_distance"] for r in by_vector], atol=1e-5)


def test_an_export_that_fails_leaves_nothing(index_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(store: object):
        yield from []
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "chunks", failing)
    with pytest.raises(OSError):
        export_module.export_index(index_db, "parquet", tmp_path / "x.parquet")
    assert [p.name for p in tmp_path.iterdir() if "x.parquet" in p.name] == []


def test_a_binary_index_is_refused_with_the_fix(tiny_bundle: Path, collection: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "bits.db"
    assert main(["index", str(db), str(collection), "--bundle", str(tiny_bundle), "--precision", "binary", "--quiet"]) == 0
    assert main(["export", str(db), "--to", "parquet", "--out", str(tmp_path / "b.parquet")]) == 2
    assert "--precision float16" in capsys.readouterr().err and not (tmp_path / "b.parquet").exists()
