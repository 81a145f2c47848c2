"""Every output path is checked before the work (issue 25): `search --html` and `bench --json` on a folder, a
missing folder or an unwritable place are one line and exit 2 at once, not a traceback after the work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeclip", *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("where", ["folder", "missing folder"])
def test_search_html_and_bench_json_paths_are_checked_first(tmp_path: Path, tiny_bundle: Path, where: str) -> None:
    db = tmp_path / "i.db"
    (tmp_path / "notes.md").write_text("The seal sleeps.", encoding="utf-8")
    assert cli("index", db, tmp_path / "notes.md", "--bundle", tiny_bundle, "--quiet").returncode == 0
    target = tmp_path if where == "folder" else tmp_path / "nowhere" / "out.html"
    for args in (["search", db, "seal", "--html", target],
                 ["bench", tiny_bundle, "--towers", "text", "--seconds", "60", "--json", target]):
        result = cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert ("is a folder" if where == "folder" else "does not exist") in result.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".npy", ".parquet"])
def test_a_job_whose_every_input_failed_leaves_nothing(tmp_path: Path, tiny_bundle: Path, suffix: str) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / "out" / f"emb{suffix}"
    result = cli("embed", tiny_bundle, "--image", tmp_path / "typo.jpg", "--out", out)
    assert result.returncode == 1 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert list(out.parent.iterdir()) == []
