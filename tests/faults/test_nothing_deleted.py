"""Nothing a user did not name is deleted (issue 25): --overwrite replaces only what edgeclip wrote, an --out
that is one of the inputs is refused before anything is read, and stdin into an existing output is
refused. Every refusal is one line, exit 2, and leaves the files as they were."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str | Path, check: int, stdin: str | None = None, module: str = "edgeclip") -> str:
    result = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                            timeout=300, input=stdin)
    assert result.returncode == check, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "holiday"
    folder.mkdir()
    (folder / "beach.jpg").write_bytes(b"\xff\xd8 pretend this is a photo")
    (folder / "thesis.txt").write_text("years of work", encoding="utf-8")
    return folder


@pytest.mark.parametrize("command", ["build", "make-checkpoint"])
def test_overwrite_never_deletes_what_the_converters_did_not_write(command: str, photos: Path, tiny_checkpoint: Path) -> None:
    before = tree(photos)
    args = (["build", tiny_checkpoint, "--out", photos] if command == "build" else ["make-checkpoint", photos]) + ["--overwrite"]
    said = run(*args, check=2, module="converters")
    assert "is not a" in said and "left untouched" in said and "--overwrite" not in said.split("untouched")[1]
    assert tree(photos) == before
    thesis = photos / "thesis.txt"
    args = (["build", tiny_checkpoint, "--out", thesis] if command == "build" else ["make-checkpoint", thesis]) + ["--overwrite"]
    run(*args, check=2, module="converters")
    assert thesis.read_text(encoding="utf-8") == "years of work"


def test_embed_overwrite_replaces_only_its_own_outputs(tmp_path: Path, tiny_bundle: Path) -> None:
    notes = tmp_path / "notes.jsonl"
    notes.write_text(json.dumps({"id": "a", "text": "mine, not an output"}) + "\n", encoding="utf-8")
    before = notes.read_bytes()
    said = run("embed", tiny_bundle, "--text", "x", "--out", notes, "--overwrite", check=2)
    assert "was not written by `edgeclip embed`" in said and notes.read_bytes() == before
    out = tmp_path / "out.jsonl"
    run("embed", tiny_bundle, "--text", "x", "--out", out, check=0)
    run("embed", tiny_bundle, "--text", "y", "--out", out, "--overwrite", check=0)  # its own output: replaced
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == ["--text[0]"]


def test_an_out_that_is_an_input_is_refused_before_reading(tmp_path: Path, tiny_bundle: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "a", "text": "hello"}) + "\n", encoding="utf-8")
    before = docs.read_bytes()
    for extra in ([], ["--overwrite"]):
        said = run("embed", tiny_bundle, "--jsonl", docs, "--out", docs, *extra, check=2)
        assert "is also an input" in said and docs.read_bytes() == before
    ids = tmp_path / "v.ids.jsonl"  # the .npy output's id sidecar counts too
    ids.write_text(json.dumps({"id": "a", "text": "hello"}) + "\n", encoding="utf-8")
    assert "is also an input" in run("embed", tiny_bundle, "--jsonl", ids, "--out", tmp_path / "v.npy", check=2)


def test_another_stdin_stream_into_an_existing_output_is_refused(tmp_path: Path, tiny_bundle: Path) -> None:
    """stdin lines are ids stdin:1, stdin:2, ...: the same stream again resumes the output, another one is refused
    (its lines would replace the first stream's rows) before anything is written, unless --overwrite."""
    out = tmp_path / "out.jsonl"
    run("embed", tiny_bundle, "--text-file", "-", "--out", out, check=0, stdin="same header\nfirst batch\n")
    first = out.read_bytes()
    run("embed", tiny_bundle, "--text-file", "-", "--out", out, check=0, stdin="same header\nfirst batch\nmore\n")
    resumed = out.read_bytes()
    assert resumed.startswith(first) and len(resumed.splitlines()) == 3
    said = run("embed", tiny_bundle, "--text-file", "-", "--out", out, check=2, stdin="same header\nsecond batch\n")
    assert "stdin line 2 differs from the row stdin:2" in said and out.read_bytes() == resumed
    run("embed", tiny_bundle, "--text-file", "-", "--out", out, "--overwrite", check=0, stdin="same header\nsecond batch\n")
    assert len(out.read_bytes().splitlines()) == 2
