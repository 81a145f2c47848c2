"""Hostile text, batches with bad items, tampered bundles, threads and repeated calls."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import edgeclip
from edgeclip.cli import main as cli_main


@pytest.fixture(scope="module")
def model(tiny_bundle: Path) -> edgeclip.EdgeClip:
    return edgeclip.load(tiny_bundle, variant="fp32")


def _unit_rows(rows: np.ndarray) -> bool:
    return bool(np.isfinite(rows).all() and np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-5))


def test_empty_whitespace_control_and_zero_width_texts_embed(model: edgeclip.EdgeClip) -> None:
    texts = ["", "   ", "\t\n", "a\x00b\x07c", "zero\u200bwidth\u200d", "\ufeffbom", "e\u0301"]
    rows = model.encode_text(texts)
    assert rows.shape == (len(texts), 64) and _unit_rows(rows)
    np.testing.assert_allclose(rows[0], model.encode_text("")[0], atol=1e-6)  # same text, same row in any batch


def test_over_long_text_is_truncated_or_refused(model: edgeclip.EdgeClip) -> None:
    long = "word " * 3000
    assert model.encode_text([long], max_length=64).shape == (1, 64)
    with pytest.raises(edgeclip.InputError, match=r"text 1 \(\d+ tokens\) exceed max_length 64.*truncate=True"):
        model.encode_text(["short", long], max_length=64, truncate=False)
    assert model.encode_text(["short"], max_length=64, truncate=False).shape == (1, 64)


@pytest.mark.parametrize(("bad", "reason"), [
    (None, "text 1 is NoneType, expected str"),
    (42, "text 1 is int, expected str"),
    (b"bytes", "text 1 is bytes, expected str; decode bytes first"),
    ("lone \ud800 surrogate", "text 1 is not valid Unicode .*position 5"),
])
def test_bad_texts_name_their_index(model: edgeclip.EdgeClip, bad: object, reason: str) -> None:
    with pytest.raises(edgeclip.InputError, match=reason):
        model.encode_text(["fine", bad, "also fine"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=()), max_size=60), min_size=1, max_size=4))
def test_random_unicode_embeds_or_raises_input_error(model: edgeclip.EdgeClip, texts: list[str]) -> None:
    try:
        rows = model.encode_text(texts, max_length=48)
    except edgeclip.InputError as exc:
        assert "not valid Unicode" in str(exc)
        assert any(0xD800 <= ord(ch) <= 0xDFFF for text in texts for ch in text)
    else:
        assert rows.shape == (len(texts), 64) and _unit_rows(rows)


def test_cli_keeps_going_and_reports_failures(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    out = tmp_path / "out.jsonl"
    code = cli_main(["embed", str(tiny_bundle), "--text", "one", "--text", "two", "--image", str(good), str(broken),
                     str(good), "--variant", "fp32", "--out", str(out)])
    assert code == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["--text[0]", "--text[1]", str(good)]  # one row per id
    err = capsys.readouterr().err
    assert "2 of 5 inputs failed" in err and f"image {broken}: cannot decode" in err
    assert f"image {good}: duplicate id" in err
    # All bad: nothing is written, exit 1.
    nothing = tmp_path / "none.npy"
    assert cli_main(["embed", str(tiny_bundle), "--image", str(broken), "--out", str(nothing)]) == 1
    assert not nothing.exists()


def test_verify_checks_every_hash(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    assert cli_main(["verify", str(copy)]) == 0
    assert "files match their sha256" in capsys.readouterr().out
    graph = copy / "vision.fp32.onnx"
    data = bytearray(graph.read_bytes())
    data[-100] ^= 0xFF  # same size: only the hash can tell
    graph.write_bytes(bytes(data))
    assert cli_main(["verify", str(copy)]) == 2
    assert "vision.fp32.onnx: sha256 differs from the manifest" in capsys.readouterr().err


def _with_external_location(bundle: Path, location: str) -> None:
    """Rewrite the text graph so its weights live in an external file named `location`."""
    import onnx

    graph = bundle / "text.fp32.onnx"
    model = onnx.load(str(graph))
    placeholder = "w" * len(location)
    onnx.save_model(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=placeholder, size_threshold=0)
    raw = graph.read_bytes().replace(placeholder.encode(), location.encode())
    graph.write_bytes(raw)
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["text"]["variants"]["fp32"]["files"][0]
    entry["size"] = graph.stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(("location", "message"), [
    ("../outside.data", "outside the bundle"),
    ("/etc/hostname", "outside the bundle"),
    ("unlisted.data", "which the manifest does not list"),
])
def test_external_data_must_stay_in_the_bundle(tiny_bundle: Path, tmp_path: Path, location: str, message: str) -> None:
    pytest.importorskip("onnx")
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    _with_external_location(copy, location)
    with pytest.raises(edgeclip.BundleError, match=message):
        edgeclip.load(copy, variant="fp32").encode_text("x")


def test_threads_get_the_same_results_as_sequential_calls(tiny_bundle: Path) -> None:
    shared = edgeclip.load(tiny_bundle, variant="fp32", threads=1)
    texts = [[f"text {i} {j}" for j in range(5)] for i in range(8)]
    images = [np.full((32 + i, 48, 3), 20 * i, np.uint8) for i in range(8)]
    expected_t = [shared.encode_text(t) for t in texts]
    expected_i = [shared.encode_image(im) for im in images]
    fresh = edgeclip.load(tiny_bundle, variant="fp32", threads=1)  # sessions opened concurrently, too
    got_t: dict[int, np.ndarray] = {}
    got_i: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                got_t[i] = fresh.encode_text(texts[i])
                got_i[i] = fresh.encode_image(images[i])
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    for i in range(8):
        np.testing.assert_array_equal(got_t[i], expected_t[i])
        np.testing.assert_array_equal(got_i[i], expected_i[i])


def test_repeated_calls_are_deterministic_and_do_not_grow_memory(model: edgeclip.EdgeClip) -> None:
    texts = ["the same words, again", "encore les mêmes mots"]
    image = np.full((64, 80, 3), 123, np.uint8)
    first_t, first_i = model.encode_text(texts), model.encode_image(image)
    process = psutil.Process()

    def window_growth_mb(calls: int) -> float:
        before = process.memory_info().rss
        for _ in range(calls):
            assert np.array_equal(model.encode_text(texts), first_t)
            assert np.array_equal(model.encode_image(image), first_i)
        return (process.memory_info().rss - before) / 2**20

    window_growth_mb(40)  # warm-up: allocator pools and ORT arenas settle
    # A leak grows every window by the same amount; allocator pools and arenas step up once and
    # at a moment that depends on what ran before in the process. Two windows tell them apart.
    growth = [window_growth_mb(150), window_growth_mb(150)]
    assert min(growth) < 4, f"RSS grew {growth[0]:.1f} MB, then {growth[1]:.1f} MB per 150 repeated calls"
