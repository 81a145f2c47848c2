"""`edgeclip embed` as users meet it: Ctrl-C and resume, output paths, stdin/stdout, errors without tracebacks."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgeclip
from edgeclip.bundle import MANIFEST_FILE, Bundle
from edgeclip.cli import main


def _cli(*args: str, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "edgeclip", *args], input=stdin, capture_output=True, timeout=timeout)


def _rows(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_ctrl_c_keeps_finished_rows_exits_130_and_a_rerun_embeds_only_the_rest(tiny_bundle: Path, tmp_path: Path) -> None:
    """stdin stays open, so the job cannot finish before the signal arrives: deterministic."""
    lines = [f"line {i} " + "x " * (i % 7) for i in range(600)]
    out = tmp_path / "o.jsonl"
    job = subprocess.Popen([sys.executable, "-m", "edgeclip", "embed", str(tiny_bundle), "--text-file", "-", "--out", str(out),
                            "--batch-size", "8"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert job.stdin is not None
    job.stdin.write(("\n".join(lines[:300]) + "\n").encode())
    job.stdin.flush()
    deadline = time.monotonic() + 60
    while _rows(out) < 64 and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 130, err
    assert b"interrupted: every finished row is in" in err and b"Traceback" not in err
    kept = _rows(out)
    assert 64 <= kept <= 300
    rerun = _cli("embed", str(tiny_bundle), "--text-file", "-", "--out", str(out), "--batch-size", "8",
                 stdin=("\n".join(lines) + "\n").encode())
    assert rerun.returncode == 0, rerun.stderr
    assert f"embedded {600 - kept} texts".encode() in rerun.stderr and f"skipped {kept} already".encode() in rerun.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted({f"stdin:{i}" for i in range(1, 601)})


def test_a_second_job_on_the_same_output_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    job = subprocess.Popen([sys.executable, "-m", "edgeclip", "embed", str(tiny_bundle), "--text-file", "-", "--out", str(out)],
                           stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (tmp_path / "o.jsonl.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = _cli("embed", str(tiny_bundle), "--text", "a", "--out", str(out))
    job.communicate(input=b"one\n", timeout=60)
    assert second.returncode == 2 and b"another edgeclip job is writing o.jsonl" in second.stderr
    assert job.returncode == 0 and _rows(out) == 1


def test_bad_output_paths_fail_first_with_one_line(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    cases = {str(tmp_path): "is a directory", str(tmp_path / "file" / "o.jsonl"): "is a file, not a folder",
             str(tmp_path / "o.csv"): "--out must end in"}
    for out, message in cases.items():
        assert main(["embed", str(tiny_bundle), "--text", "a", "--out", out]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o555)
        assert main(["embed", str(tiny_bundle), "--text", "a", "--out", str(locked / "o.jsonl")]) == 2
        assert "permission denied" in capsys.readouterr().err


def test_stdout_output_and_jsonl_input_with_ids(tiny_bundle: Path, tmp_path: Path) -> None:
    picture = io.BytesIO()
    Image.new("RGB", (20, 20), (9, 99, 199)).save(picture, "PNG")
    uri = "data:image/png;base64," + base64.b64encode(picture.getvalue()).decode()
    records = [{"id": "doc-1", "text": "hello"}, {"id": 2, "image": uri}]
    done = _cli("embed", str(tiny_bundle), "--jsonl", "-", "--out", "-", "--dim", "32", "--variant", "fp32",
                stdin="\n".join(json.dumps(r) for r in records).encode())
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [(r["id"], r["kind"], r["dim"]) for r in rows] == [("doc-1", "text", 32), ("2", "image", 32)]
    model = edgeclip.load(tiny_bundle, variant="fp32")
    np.testing.assert_allclose(rows[1]["embedding"], model.encode_image([picture.getvalue()], truncate_dim=32)[0], atol=1e-6)


def test_truncated_texts_unsupported_files_and_directories_are_reported(tiny_bundle: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", str(tiny_bundle), "--text", "a long text " * 20, "--text", "short", "--max-length", "8",
                 "--image", str(tmp_path), "--out", str(tmp_path / "o.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "1 texts were longer than 8 tokens and were truncated" in err
    assert f"image {tmp_path}: image path" in err and "--image-dir" in err


def _damage_graph(bundle: Path) -> None:
    """Same size, garbage bytes, manifest updated: only onnxruntime can tell."""
    from converters.package import file_entry

    graph = bundle / "text.fp32.onnx"
    graph.write_bytes(b"\x07garbage" * (graph.stat().st_size // 8) + b"x" * (graph.stat().st_size % 8))
    manifest = Bundle.open(bundle).manifest
    variant = manifest.text.variants["fp32"]  # type: ignore[union-attr]
    files = tuple(file_entry(bundle, bundle / f.path) for f in variant.files)
    text = dataclasses.replace(manifest.text, variants={**manifest.text.variants, "fp32": dataclasses.replace(variant, files=files)})  # type: ignore[union-attr, arg-type]
    (bundle / MANIFEST_FILE).write_text(dataclasses.replace(manifest, text=text).to_json())


def test_load_and_bundle_errors_exit_2_without_a_traceback(tiny_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("converters.package")
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    _damage_graph(copy)
    out = tmp_path / "o.jsonl"
    for args, message in (
        (["--variant", "fp32"], b"onnxruntime cannot load text.fp32.onnx (InvalidProtobuf"),
        (["--variant", "int16"], b"no variant 'int16'; available: fp32"),
        (["--threads", "0"], b"--threads: expected a positive integer, got 0"),
    ):
        done = _cli("embed", str(copy), "--text", "a", "--out", str(out), *args)
        assert done.returncode == 2 and message in done.stderr and b"Traceback" not in done.stderr, done.stderr
    assert not out.exists()
    with pytest.raises(edgeclip.InputError, match="threads must be a positive int"):
        edgeclip.load(tiny_bundle, threads=0)
    with pytest.raises(edgeclip.BundleError, match="no variant 'int16'"):
        edgeclip.load(tiny_bundle, variant="int16")


def test_a_job_needing_a_missing_tower_fails_before_any_input(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    copy = tmp_path / "text-only"
    shutil.copytree(tiny_bundle, copy)
    manifest = Bundle.open(copy).manifest
    (copy / MANIFEST_FILE).write_text(dataclasses.replace(manifest, vision=None).to_json())
    image = tmp_path / "a.png"
    Image.new("RGB", (9, 9)).save(image)
    out = tmp_path / "o.jsonl"
    assert main(["embed", str(copy), "--text", "fine", "--image", str(image), "--out", str(out)]) == 2
    assert "has no vision tower" in capsys.readouterr().err and not out.exists()


def test_version_and_info_json(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"edgeclip {edgeclip.__version__}"
    assert main(["info", str(tiny_bundle), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["manifest"]["embed_dim"] == 64 and len(info["manifest_sha256"]) == 64
    assert info["manifest"]["source"]["random_weights"] is True


def test_inputs_that_are_all_unreadable_are_listed_not_a_traceback(tiny_bundle: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "bad.jsonl"
    records.write_text('not json\n{"id": 1}\n', encoding="utf-8")
    out = tmp_path / "o.jsonl"
    assert main(["embed", str(tiny_bundle), "--jsonl", str(records), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "2 of 2 inputs failed" in err and "not valid JSON" in err and 'exactly one of "text" or "image"' in err
    assert not out.exists()
