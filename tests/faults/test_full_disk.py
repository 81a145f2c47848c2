"""A full disk under every output format (issue 25): one line and exit 4, nothing torn, no temporary file
left, and a rerun after freeing space completes the job with every id once. The output folder is a small
tmpfs mounted in a user+mount namespace (`unshare -rm`), so the disk really fills: no mock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skips import need

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "texts.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{i}", "text": f"text number {i} about the harbour " * 3}) + "\n"
                            for i in range(400)), encoding="utf-8")
    return path


def in_small_disk(tmp_path: Path, size_kb: int, *args: str) -> dict:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        need("EDGECLIP_REQUIRE_OFFLINE", "unshare -rm (user and mount namespaces) is not available here")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f'mount -t tmpfs -o size={size_kb}k none "$1" && shift && exec "$@"'
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(disk), sys.executable,
                             str(HERE / "full_disk_run.py"), *args], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("documents")
    for i in range(300):
        (folder / f"note{i:03d}.txt").write_text(f"note {i}: the ferry leaves at dawn " * 20, encoding="utf-8")
    return folder


@pytest.mark.parametrize(("suffix", "free_kb"), [(".jsonl", 120), (".npy", 40), (".parquet", 40), (".db", 200)])
def test_a_full_disk_is_one_line_exit_4_nothing_torn_and_a_rerun_completes(tmp_path: Path, tiny_bundle: Path, texts: Path,
                                                                           documents: Path, suffix: str, free_kb: int) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    inputs = documents if suffix == ".db" else texts
    report = in_small_disk(tmp_path, 4096, str(tiny_bundle), str(inputs), str(tmp_path / "disk"), suffix, str(free_kb))
    assert report["first_rc"] == 4, report
    lines = [line for line in report["first_stderr"].splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and "Traceback" not in report["first_stderr"], report["first_stderr"]
    assert "the disk is full" in lines[0] and "rerun the same command" in lines[0]
    assert report["first_stderr"].count("failed:") == 0
    assert report["torn"] in (None, False)
    stray = [name for name in report["left"] if name.startswith(".") and not name.endswith(".parts")
             or name.endswith((".compact", ".merge", ".lock", "-journal"))]
    assert stray == [], report["left"]
    assert report["second_rc"] == 0, report["second_stderr"]
    assert report["ids_once"] and report["rows_finite"]
