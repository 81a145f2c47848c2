"""A bundle with one flipped byte in its weights never adds rows to an output made with the intact ones
(issue 25): the resume is refused with one line naming the file; a fresh output is the user's call
(`edgeclip verify` checks a bundle)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeclip.integrity import cache_path


def cli(*args: str | Path, check: int) -> str:
    result = subprocess.run([sys.executable, "-m", "edgeclip", *map(str, args)], capture_output=True, text=True, timeout=300)
    assert result.returncode == check, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.fixture()
def bundle(tmp_path: Path, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the verdict cache: this test's own
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    return copy


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("suffix", [".jsonl", ".npy"])
def test_a_resume_with_damaged_weights_is_refused(tmp_path: Path, bundle: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    cli("embed", bundle, "--text", "one", "--out", out, check=0)
    cli("embed", bundle, "--text", "one", "--text", "two", "--out", out, check=0)  # a resume with intact weights
    assert cache_path().is_file()  # and their verdict is cached
    before = out.read_bytes()
    data = next(bundle.glob("text.*.onnx.data"))
    flip(data, data.stat().st_size // 3)
    said = cli("embed", bundle, "--text", "one", "--text", "three", "--out", out, check=2)
    assert data.name in said and "differ from the checksums in its manifest" in said
    assert out.read_bytes() == before


def test_a_change_the_cache_cannot_see_by_mtime_is_still_found(tmp_path: Path, bundle: Path) -> None:
    import os

    out = tmp_path / "out.jsonl"
    cli("embed", bundle, "--text", "one", "--out", out, check=0)
    cli("embed", bundle, "--text", "two", "--out", out, check=0)
    data = next(bundle.glob("text.*.onnx.data"))
    stat = data.stat()
    flip(data, 0)  # where the first sample falls
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime put back: only the sampled hash can tell
    assert "differ from the checksums" in cli("embed", bundle, "--text", "three", "--out", out, check=2)


def test_an_index_refuses_to_grow_with_damaged_weights(tmp_path: Path, bundle: Path) -> None:
    from PIL import Image

    collection = tmp_path / "collection"
    collection.mkdir()
    (collection / "notes.md").write_text("The seal sleeps on the rock.", encoding="utf-8")
    Image.new("RGB", (40, 30), (200, 90, 10)).save(collection / "seal.png")
    db = tmp_path / "photos.db"
    cli("index", db, collection / "notes.md", "--bundle", bundle, "--quiet", check=0)
    data = next(bundle.glob("vision.*.onnx.data"))
    flip(data, data.stat().st_size // 2)
    assert "differ from the checksums" in cli("index", db, collection, "--bundle", bundle, "--quiet", check=2)
