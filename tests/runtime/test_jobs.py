"""The job pipeline and its sinks: resume after an interruption, settings, locks, torn tails, changed inputs."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgeclip
from edgeclip.errors import InputError
from edgeclip.jobs import JobOptions, OutputSettings, ScanReport, open_sink, read_rows, run_job, sources

FORMATS = ["jsonl", "npy", "parquet"]


@pytest.fixture(scope="module")
def model(tiny_bundle: Path) -> edgeclip.EdgeClip:
    return edgeclip.load(tiny_bundle, variant="fp32", threads=1)


def _settings(model: edgeclip.EdgeClip, dim: int = 64, precision: str = "float32") -> OutputSettings:
    return OutputSettings(bundle_sha256="abc", model="tiny", variants={"text": "fp32", "vision": "fp32"}, dim=dim,
                          precision=precision, task=None, max_length=512, exif_transpose=True)


def _inputs(tmp_path: Path, texts: int = 300, images: int = 9) -> tuple[Path, Path]:
    text_file = tmp_path / "texts.txt"
    text_file.write_text("\n".join(f"text number {i} " + "word " * (i % 17) for i in range(texts)), encoding="utf-8")
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(images):
        Image.fromarray(rng.integers(0, 255, (40 + i, 60, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return text_file, folder


def _items(text_file: Path, folder: Path):  # noqa: ANN202
    yield from sources.text_file(str(text_file))
    yield from sources.image_dir(str(folder), ScanReport())


def _job(model: edgeclip.EdgeClip, out: Path, text_file: Path, folder: Path, stop_after: int | None = None):  # noqa: ANN202
    stop = threading.Event()
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        if stop_after is not None and done[0] >= stop_after:
            stop.set()

    sink = open_sink(str(out), _settings(model))
    try:
        summary = run_job(model, _items(text_file, folder), sink, JobOptions(text_batch=16, image_batch=2, text_window=4), stop=stop,
                          progress=progress)
    finally:
        sink.close()
    return summary


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_interrupted_job_resumes_with_every_id_once(model: edgeclip.EdgeClip, tmp_path: Path, fmt: str) -> None:
    text_file, folder = _inputs(tmp_path)
    whole = _job(model, tmp_path / f"whole.{fmt}", text_file, folder)
    assert whole.texts == 300 and whole.images == 9 and not whole.interrupted
    first = _job(model, tmp_path / f"parts.{fmt}", text_file, folder, stop_after=100)
    assert first.interrupted and 0 < first.embedded < 309
    kept, _ = read_rows(tmp_path / f"parts.{fmt}")
    assert len(kept) == first.embedded  # every finished row was kept
    second = _job(model, tmp_path / f"parts.{fmt}", text_file, folder)
    assert second.skipped == first.embedded and second.embedded == 309 - first.embedded and not second.interrupted
    ids_whole, rows_whole = read_rows(tmp_path / f"whole.{fmt}")
    ids, rows = read_rows(tmp_path / f"parts.{fmt}")
    assert len(ids) == len(set(ids)) == 309 and set(ids) == set(ids_whole)
    by_id = dict(zip(ids, rows))
    assert max(np.abs(by_id[i] - row).max() for i, row in zip(ids_whole, rows_whole)) <= 1e-6
    expected = model.encode_text(["text number 5 " + "word " * 5])[0]
    np.testing.assert_allclose(by_id[f"{text_file}:6"], expected, atol=1e-6)
    assert not list(tmp_path.glob(".*parts*"))  # parquet shards merged, nothing left over


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_output_with_other_settings_is_refused(model: edgeclip.EdgeClip, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"o.{fmt}"
    sink = open_sink(str(out), _settings(model))
    sink.write(_batch(["a"], 64))
    sink.close()
    with pytest.raises(InputError, match=r"written with other settings: dim 64 \(this run: 32\).*--overwrite"):
        open_sink(str(out), _settings(model, dim=32))
    fresh = open_sink(str(out), _settings(model, dim=32), overwrite=True)
    assert fresh.done == {}
    fresh.close()
    assert not out.exists()  # nothing written: nothing left behind


def _batch(ids: list[str], width: int, value: float = 0.5, precision: str = "float32"):  # noqa: ANN202
    from edgeclip.jobs import RowBatch

    dtype = {"float32": np.float32, "ubinary": np.uint8}[precision]
    return RowBatch(ids, ["text"] * len(ids), [f"fp-{i}" for i in ids], np.full((len(ids), width), value, dtype=dtype))


def test_a_second_writer_is_locked_out(model: edgeclip.EdgeClip, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    first = open_sink(str(out), _settings(model))
    with pytest.raises(InputError, match="another edgeclip job is writing o.jsonl"):
        open_sink(str(out), _settings(model))
    first.write(_batch(["a"], 64))
    first.close()
    second = open_sink(str(out), _settings(model))  # the lock went with the first writer
    assert second.done == {"a": "fp-a"}
    second.close()


def test_torn_tails_are_cut_back_to_whole_rows(model: edgeclip.EdgeClip, tmp_path: Path) -> None:
    for name in ("o.jsonl", "o.npy"):
        out = tmp_path / name
        sink = open_sink(str(out), _settings(model))
        sink.write(_batch(["a", "b"], 64))
        sink.close()
        with open(out, "ab") as handle:  # a process killed in the middle of its next write
            handle.write(b'{"id": "c", "kind": "te' if name.endswith("jsonl") else b"\x00" * 100)
        if name.endswith("npy"):
            with open(tmp_path / "o.ids.jsonl", "ab") as handle:
                handle.write(b'{"id": "c", "kind": "text", "fingerprint": "x"}\n')  # ids written, header not yet
        sink = open_sink(str(out), _settings(model))
        assert set(sink.done) == {"a", "b"}
        sink.write(_batch(["c"], 64, value=0.25))
        sink.close()
        ids, rows = read_rows(out)
        assert ids == ["a", "b", "c"] and rows.shape == (3, 64) and rows[2, 0] == pytest.approx(0.25)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_changed_input_is_embedded_again_and_its_old_row_dropped(model: edgeclip.EdgeClip, tmp_path: Path, fmt: str) -> None:
    text_file, folder = _inputs(tmp_path, texts=3, images=3)
    out = tmp_path / f"o.{fmt}"
    _job(model, out, text_file, folder)
    changed = folder / "01.png"
    Image.new("RGB", (50, 50), (250, 250, 0)).save(changed)
    os.utime(changed, ns=(10**18, 10**18))
    summary = _job(model, out, text_file, folder)
    assert (summary.images, summary.changed, summary.skipped) == (1, 1, 5)
    ids, rows = read_rows(out)
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 6
    np.testing.assert_allclose(dict(zip(ids, rows))[str(changed)], model.encode_image([changed])[0], atol=1e-6)


def test_bad_inputs_are_reported_one_by_one_and_the_rest_written(model: edgeclip.EdgeClip, tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (30, 30), (1, 2, 3)).save(good)
    items = [*sources.texts(["fine"]), *sources.image_files([str(good), str(tmp_path / "missing.png"), str(tmp_path),
                                                             "https://example.invalid/x.jpg", "data:image/png;base64,!!"])]
    sink = open_sink(str(tmp_path / "o.jsonl"), _settings(model))
    summary = run_job(model, items, sink, JobOptions())
    sink.close()
    reasons = {f.id: f.reason for f in summary.failures}
    assert summary.embedded == 2 and len(reasons) == 4
    assert "does not exist" in reasons[str(tmp_path / "missing.png")]
    assert "is a directory" in reasons[str(tmp_path)] and "--image-dir" in reasons[str(tmp_path)]
    assert "fetch_urls=True" in reasons["https://example.invalid/x.jpg"]
    assert any("not valid base64" in r for r in reasons.values())


def test_precision_and_width_reach_every_format(model: edgeclip.EdgeClip, tmp_path: Path) -> None:
    settings = _settings(model, dim=64, precision="ubinary")
    for fmt in FORMATS:
        sink = open_sink(str(tmp_path / f"b.{fmt}"), settings)
        run_job(model, sources.texts(["a", "b", "c"]), sink, JobOptions(precision="ubinary"))
        sink.close()
        ids, rows = read_rows(tmp_path / f"b.{fmt}")
        expected = model.encode_text(["a", "b", "c"], precision="ubinary")
        assert ids == ["--text[0]", "--text[1]", "--text[2]"]
        np.testing.assert_array_equal(rows.astype(np.uint8), expected)
    meta = json.loads((tmp_path / "b.npy.meta.json").read_text())
    assert meta["precision"] == "ubinary" and meta["dim"] == 64
    import pyarrow.parquet as pq

    stored = json.loads(pq.read_schema(tmp_path / "b.parquet").metadata[b"edgeclip"])
    assert stored["bundle_sha256"] == "abc"


def test_a_stop_during_the_last_window_counts_as_an_interruption(model: edgeclip.EdgeClip, tmp_path: Path) -> None:
    stop = threading.Event()
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] >= 40:
            stop.set()

    sink = open_sink(str(tmp_path / "o.jsonl"), _settings(model))
    summary = run_job(model, sources.texts([f"t {i}" for i in range(200)]), sink, JobOptions(text_batch=8), stop=stop,
                      progress=progress)  # 200 texts: one window, cut after 5 batches
    sink.close()
    assert summary.interrupted and summary.texts == 40 and len(read_rows(tmp_path / "o.jsonl")[0]) == 40


def test_a_compaction_cut_short_is_finished_on_the_next_open(model: edgeclip.EdgeClip, tmp_path: Path) -> None:
    """The .npy sink writes both compacted files, then a marker, then renames: a crash after the marker
    must never pair old ids with new rows."""
    from edgeclip.jobs.npy_sink import NpySink, ids_path

    out = tmp_path / "o.npy"
    sink = open_sink(str(out), _settings(model))
    sink.write(_batch(["a", "b"], 64, value=0.1))
    sink.write(_batch(["a"], 64, value=0.9))  # "a" changed: its first row is superseded
    assert isinstance(sink, NpySink)

    def crash() -> None:  # the process dies after the marker is written, before any rename
        raise RuntimeError("killed")

    sink._roll_forward = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="killed"):
        sink.close()
    assert (tmp_path / "o.npy.compacting").exists()
    assert len(np.load(out)) == 3  # still the old pair, consistent with the old ids
    reopened = open_sink(str(out), _settings(model))
    assert reopened.done == {"b": "fp-b", "a": "fp-a"} and reopened.rows == 2
    reopened.close()
    ids, rows = read_rows(out)
    assert ids == ["b", "a"] and rows[:, 0].tolist() == pytest.approx([0.1, 0.9])
    assert not (tmp_path / "o.npy.compacting").exists() and ids_path(out).exists()


def test_parquet_shards_of_a_killed_job_are_picked_up(model: edgeclip.EdgeClip, tmp_path: Path) -> None:
    """Every batch handed to the sink is a shard on disk at once: a kill loses only the batch being embedded."""
    out = tmp_path / "o.parquet"
    sink = open_sink(str(out), _settings(model))
    sink.write(_batch([f"id{i}" for i in range(40)], 64))
    sink.write(_batch(["last"], 64))
    sink.lock.release()  # the kernel does this when a process dies; close() never runs
    assert not out.exists() and len(list((tmp_path / ".o.parquet.parts").glob("part-*.parquet"))) == 2
    resumed = open_sink(str(out), _settings(model))
    assert len(resumed.done) == 41 and "last" in resumed.done
    resumed.write(_batch(["after"], 64))
    resumed.close()
    ids, rows = read_rows(out)
    assert len(ids) == len(set(ids)) == 42 and rows.shape == (42, 64)
    assert not (tmp_path / ".o.parquet.parts").exists()
