"""LanceDB's "edgeclip" embedding function with the real lancedb package: a table of images and documents
embedded on insert, searched by text in two languages and by image, ranked as edgeclip ranks the same vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

lancedb = pytest.importorskip("lancedb")
from lancedb.embeddings import get_registry
from lancedb.pydantic import LanceModel, Vector

import edgeclip
import edgeclip.integrations.lancedb

DOCS = ["A red bicycle leans against a wall.", "Ein rotes Fahrrad lehnt an einer Wand.",
        "Quarterly tax forms are due in April.", "La marée monte vite sur la plage."]


def photo(folder: Path, name: str, seed: int) -> Path:
    ramp = np.add.outer(np.arange(60), np.arange(80))[..., None] * np.array([1, 2, 3]) + seed * 53
    path = folder / name
    Image.fromarray((ramp % 256).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("mixed")
    return [str(photo(folder, f"p{i}.png", i)) for i in range(3)] + DOCS


def expected_order(model: edgeclip.EdgeClip, sources: list[str], query: np.ndarray) -> list[tuple[str, float]]:
    rows = np.concatenate([model.encode_image(sources[:3]), model.encode_text(sources[3:])])
    scores = rows @ query / np.linalg.norm(rows, axis=1) / np.linalg.norm(query)
    return [(sources[i], float(scores[i])) for i in np.argsort(-scores)]


def assert_same_ranking(got: list[dict], want: list[tuple[str, float]]) -> None:
    assert [r["source"] for r in got] == [s for s, _ in want[: len(got)]] or all(  # equal, or differing only in ties
        abs(dict(want)[r["source"]] - want[i][1]) < 1e-5 for i, r in enumerate(got))
    np.testing.assert_allclose([1 - r["_distance"] for r in got], [s for _, s in want[: len(got)]], atol=1e-5)


def test_a_mixed_table_embeds_on_insert_and_searches_like_edgeclip(tiny_bundle: Path, sources: list[str],
                                                                   tmp_path: Path) -> None:
    func = get_registry().get("edgeclip").create(bundle=str(tiny_bundle))
    model = edgeclip.load(tiny_bundle)

    class Item(LanceModel):
        source: str = func.SourceField()
        vector: Vector(func.ndims()) = func.VectorField()  # type: ignore[valid-type]

    table = lancedb.connect(tmp_path / "db").create_table("items", schema=Item)
    table.add([{"source": s} for s in sources])
    stored = np.array(table.to_pandas().sort_values("source")["vector"].tolist())
    order = sorted(range(len(sources)), key=lambda i: sources[i])
    mine = np.concatenate([model.encode_image(sources[:3]), model.encode_text(sources[3:])])[order]
    np.testing.assert_allclose(stored, mine, atol=1e-6)  # the stored vectors are edgeclip's

    task = "retrieval.query" if "retrieval.query" in model.manifest.text.task_prefixes else None
    for text in ("a red bicycle", "ein rotes Fahrrad"):
        got = table.search(text).metric("cosine").limit(5).to_list()
        assert_same_ranking(got, expected_order(model, sources, model.encode_text([text], task=task)[0]))
    query_image = Image.open(sources[1])
    got = table.search(query_image).metric("cosine").limit(5).to_list()
    assert got[0]["source"] == sources[1]  # an image finds itself first
    assert_same_ranking(got, expected_order(model, sources, model.encode_image([sources[1]])[0]))

    reopened = lancedb.connect(tmp_path / "db").open_table("items")  # the function's settings live with the table
    again = reopened.search("a red bicycle").metric("cosine").limit(5).to_list()
    assert [r["source"] for r in again] == [r["source"] for r in table.search("a red bicycle").metric("cosine").limit(5).to_list()]


def test_a_matryoshka_width_and_a_clear_error(tiny_bundle: Path) -> None:
    model = edgeclip.load(tiny_bundle)
    dim = model.matryoshka_dims[0]
    func = get_registry().get("edgeclip").create(bundle=str(tiny_bundle), dim=dim)
    assert func.ndims() == dim and func.compute_source_embeddings(["x"])[0].shape == (dim,)
    broken = get_registry().get("edgeclip").create(bundle=str(tiny_bundle / "missing"))
    with pytest.raises(edgeclip.BundleError):
        broken.ndims()
