"""`edgeclip info` and `edgeclip embed` on the tiny bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgeclip
from edgeclip.cli import main


def test_info_lists_what_is_inside(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    for needle in ("RANDOM WEIGHTS", "truncate_dim one of [16, 32, 64]", "retrieval.query", "fp32: fp32", "min cosine", "512x512"):
        assert needle in out


def test_embed_writes_jsonl_in_input_order(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "texts.txt").write_text("first line\n\nthird line\n", encoding="utf-8")
    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (600, 400), (255, 0, 0)).save(images / "b.png")
    Image.new("RGB", (300, 700), (0, 0, 255)).save(images / "sub" / "a.jpg")
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out.jsonl"
    code = main(["embed", str(tiny_bundle), "--text", "hello", "--text-file", str(tmp_path / "texts.txt"),
                 "--image-dir", str(images), "--dim", "32", "--task", "retrieval.query", "--out", str(out)])
    assert code == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == ["--text[0]", f"{tmp_path / 'texts.txt'}:1", f"{tmp_path / 'texts.txt'}:3",
                                          str(images / "b.png"), str(images / "sub" / "a.jpg")]
    assert [r["kind"] for r in records] == ["text"] * 3 + ["image"] * 2
    assert {r["dim"] for r in records} == {32}
    model = edgeclip.load(tiny_bundle)
    expected = model.encode_text(["hello", "first line", "third line"], task="retrieval.query", truncate_dim=32)
    np.testing.assert_allclose([r["embedding"] for r in records[:3]], expected, atol=1e-6)
    err = capsys.readouterr().err
    assert "embedded 3 texts and 2 images" in err and "skipped by extension: 1 .txt" in err


def test_embed_writes_npy_with_precision(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.npy"
    assert main(["embed", str(tiny_bundle), "--text", "a", "--text", "b", "--precision", "ubinary", "--out", str(out)]) == 0
    array = np.load(out)
    assert array.dtype == np.uint8 and array.shape == (2, 8)
    ids = [json.loads(line)["id"] for line in (tmp_path / "out.ids.jsonl").read_text().splitlines()]
    assert ids == ["--text[0]", "--text[1]"]


def test_embed_errors_exit_2_and_write_nothing(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.npy"
    assert main(["embed", str(tiny_bundle), "--text", "a", "--dim", "33", "--out", str(out)]) == 2
    assert "truncate_dim must be one of" in capsys.readouterr().err
    assert main(["embed", str(tiny_bundle), "--out", str(out)]) == 2
    assert "nothing to embed" in capsys.readouterr().err
    assert main(["embed", str(tiny_bundle), "--text", "a", "--out", str(tmp_path / "x.csv")]) == 2
    assert not out.exists() and list(tmp_path.iterdir()) == []
