"""`.npy` + `.ids.jsonl` are bound by a run identifier (issue 25): ids whose array is gone are dropped and their
inputs embedded again; an array and a sidecar from different runs are refused, never trusted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

import edgeclip
from edgeclip.jobs.sinks import read_rows


def embed(bundle: Path, source: Path, out: Path, check: int = 0) -> str:
    result = subprocess.run([sys.executable, "-m", "edgeclip", "embed", str(bundle), "--jsonl", str(source), "--out",
                             str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert result.returncode == check, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def texts(path: Path, prefix: str, count: int) -> list[str]:
    lines = [f"{prefix} text {i}" for i in range(count)]
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "text": t}) + "\n" for i, t in enumerate(lines)), encoding="utf-8")
    return lines


def test_ids_whose_array_was_deleted_never_label_new_rows(tmp_path: Path, tiny_bundle: Path) -> None:
    out = tmp_path / "out.npy"
    texts(tmp_path / "a.jsonl", "a", 5)
    embed(tiny_bundle, tmp_path / "a.jsonl", out)
    out.unlink()  # the array is gone, out.ids.jsonl and the settings stay
    b = texts(tmp_path / "b.jsonl", "b", 3)
    embed(tiny_bundle, tmp_path / "b.jsonl", out)
    ids, vectors = read_rows(out)
    assert ids == ["b0", "b1", "b2"]
    np.testing.assert_allclose(vectors, edgeclip.load(tiny_bundle).encode_text(b), atol=1e-6)
    embed(tiny_bundle, tmp_path / "b.jsonl", out)  # and the next run trusts what it wrote
    assert read_rows(out)[0] == ["b0", "b1", "b2"]


def test_an_array_and_ids_of_different_runs_are_refused(tmp_path: Path, tiny_bundle: Path) -> None:
    texts(tmp_path / "a.jsonl", "a", 4)
    texts(tmp_path / "b.jsonl", "b", 4)
    embed(tiny_bundle, tmp_path / "a.jsonl", tmp_path / "one.npy")
    embed(tiny_bundle, tmp_path / "b.jsonl", tmp_path / "two.npy")
    shutil.copy(tmp_path / "two.npy", tmp_path / "one.npy")  # same shape and settings, other rows
    said = embed(tiny_bundle, tmp_path / "a.jsonl", tmp_path / "one.npy", check=2)
    assert "does not belong to one.npy" in said
    assert np.load(tmp_path / "one.npy").shape == (4, 64)  # refused untouched
