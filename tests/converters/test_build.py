"""Export + bundle on the tiny checkpoint: parity through the runtime, manifest, atomic writes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from converters import validate as validate_module  # noqa: E402
from converters.build import BuildOptions, build_bundle  # noqa: E402
from converters.checkpoint import load_reference, resolve_source  # noqa: E402
from converters.errors import ConverterError, ToleranceExceeded  # noqa: E402
from edgeclip.bundle import Bundle, sha256_file  # noqa: E402
from edgeclip.session import TowerSession  # noqa: E402

ATOL, MIN_COSINE = 1e-4, 0.99999


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _assert_close(reference: np.ndarray, candidate: np.ndarray) -> None:
    assert np.abs(_unit(reference) - _unit(candidate)).max() <= ATOL
    assert (_unit(reference) * _unit(candidate)).sum(axis=1).min() >= MIN_COSINE
    assert np.abs(reference - candidate).max() <= ATOL * 10  # raw values are O(1)


@pytest.mark.parametrize("lengths", [(9,), (3, 11, 6)], ids=["batch1", "batch3_unequal"])
def test_text_graph_matches_reference(tiny_checkpoint: Path, tiny_bundle: Path, lengths: tuple[int, ...]) -> None:
    model = load_reference(resolve_source(str(tiny_checkpoint)), "text")
    session = TowerSession(Bundle.open(tiny_bundle), "text", "fp32")
    rng = np.random.default_rng(sum(lengths))
    width = max(lengths)
    ids = np.ones((len(lengths), width), dtype=np.int64)  # pad id 1
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = [0, *rng.integers(4, 1800, n - 2), 2]
        mask[row, :n] = 1
    with torch.no_grad():
        reference = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    batched = session.run({"input_ids": ids, "attention_mask": mask})["text_embeds"]
    _assert_close(reference, batched)
    one_by_one = np.concatenate([
        session.run({"input_ids": ids[i : i + 1, :n], "attention_mask": mask[i : i + 1, :n]})["text_embeds"]
        for i, n in enumerate(lengths)
    ])
    assert np.abs(batched - one_by_one).max() <= 1e-5  # padding changes nothing


@pytest.mark.parametrize("batch", [1, 3])
def test_vision_graph_matches_reference(tiny_checkpoint: Path, tiny_bundle: Path, batch: int) -> None:
    model = load_reference(resolve_source(str(tiny_checkpoint)), "vision")
    session = TowerSession(Bundle.open(tiny_bundle), "vision", "fp32")
    pixels = np.random.default_rng(batch).standard_normal((batch, 3, 512, 512)).astype(np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(pixels)).numpy()
    batched = session.run({"pixel_values": pixels})["image_embeds"]
    _assert_close(reference, batched)
    single = np.concatenate([session.run({"pixel_values": pixels[i : i + 1]})["image_embeds"] for i in range(batch)])
    assert np.abs(batched - single).max() <= 1e-5


def test_manifest_describes_the_bundle(tiny_checkpoint: Path, tiny_bundle: Path) -> None:
    bundle = Bundle.open(tiny_bundle)
    m = bundle.manifest
    assert m.source.model_id == "edgeclip/random-jina-clip-v2-tiny" and m.source.random_weights
    assert {f.path for f in m.source.files} == {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"}
    for entry in m.source.files:
        assert entry.sha256 == sha256_file(tiny_checkpoint / entry.path)
    assert m.embed_dim == 64 and m.matryoshka_dims == (16, 32, 64)
    assert m.text is not None and m.vision is not None
    assert m.text.task_prefixes == {"retrieval.query": "Represent the query for retrieving evidence documents: "}
    assert (m.text.default_max_length, m.text.max_length, m.text.pad_token_id) == (512, 8192, 1)
    assert (m.vision.image_size, m.vision.resize_mode, m.vision.interpolation) == (512, "shortest", "bicubic")
    assert m.vision.mean == (0.48145466, 0.4578275, 0.40821073)
    for tower in ("text", "vision"):
        variant = bundle.variant(tower, "fp32")
        assert variant.precision == "fp32" and not variant.normalized and variant.output_dim == 64
        figures = variant.validation["reference"]
        assert len(figures) >= 2
        assert all(case["max_abs_diff"] <= ATOL and case["min_cosine"] >= MIN_COSINE for case in figures.values())
    bundle.check_files(tuple(f for t in ("text", "vision") for f in bundle.variant(t, "fp32").files) + (m.text.tokenizer,),
                       verify_hash=True)
    # The real model's licence is stated for real weights; random weights say they are random.
    assert "Random weights" in m.license.note


def test_official_weights_carry_the_cc_by_nc_licence() -> None:
    from converters.package import JINA_CLIP_V2_LICENSE

    assert JINA_CLIP_V2_LICENSE.spdx == "CC-BY-NC-4.0"


def test_bundle_files_are_readable_by_everyone(tiny_bundle: Path) -> None:
    for path in [tiny_bundle, *tiny_bundle.iterdir()]:
        assert path.stat().st_mode & stat.S_IROTH, path


def test_graphs_keep_weights_in_one_external_data_file(tiny_checkpoint: Path, tmp_path: Path) -> None:
    bundle = build_bundle(str(tiny_checkpoint), tmp_path / "ext", BuildOptions(towers=("vision",)))
    variant = bundle.variant("vision", "fp32")
    assert [f.path for f in variant.files] == ["vision.fp32.onnx", "vision.fp32.onnx.data"]
    data = bundle.directory / "vision.fp32.onnx.data"
    assert data.stat().st_size > (bundle.directory / "vision.fp32.onnx").stat().st_size
    assert stat.S_IMODE(data.stat().st_mode) == 0o644  # onnx writes 0600
    assert bundle.manifest.text is None
    out = TowerSession(bundle, "vision", "fp32").run({"pixel_values": np.zeros((1, 3, 512, 512), np.float32)})
    assert out["image_embeds"].shape == (1, 64)


def test_failed_validation_leaves_nothing_behind(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model, session, tokenizer, cfg):  # noqa: ANN001, ANN202
        return {"batch1": {"max_abs_diff": 0.5, "min_cosine": 0.9, "raw_max_abs_diff": 1.0}}

    monkeypatch.setattr("converters.build.validate_text", broken)
    out = tmp_path / "bundle"
    with pytest.raises(ToleranceExceeded, match="text/fp32/batch1: max_abs_diff") as info:
        build_bundle(str(tiny_checkpoint), out, BuildOptions(towers=("text",)))
    assert len(info.value.failures) == 2  # both metrics of the case are listed
    assert list(tmp_path.iterdir()) == []  # no bundle, no staging leftovers


def test_interrupted_build_never_looks_like_a_bundle(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("converters.build.validate_vision", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_bundle(str(tiny_checkpoint), tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


def test_existing_bundle_needs_overwrite(tiny_checkpoint: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    before = (tiny_bundle / "manifest.json").read_bytes()
    with pytest.raises(ConverterError, match=r"already exists \(a bundle\); pass --overwrite"):
        build_bundle(str(tiny_checkpoint), tiny_bundle)
    assert (tiny_bundle / "manifest.json").read_bytes() == before
    replaced = build_bundle(str(tiny_checkpoint), tmp_path / "b", BuildOptions(towers=("text",)))
    rebuilt = build_bundle(str(tiny_checkpoint), replaced.directory, BuildOptions(overwrite=True))
    assert rebuilt.manifest.vision is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_validation_cases_cover_odd_lengths_and_batches() -> None:
    assert any(len(lengths) >= 3 and len(set(lengths)) == len(lengths) for lengths in validate_module.TEXT_CASES.values())
    assert all(n % 2 == 1 for lengths in validate_module.TEXT_CASES.values() for n in lengths)
    assert {1, 3} <= set(validate_module.VISION_BATCHES.values())


def test_cli_build_and_make_checkpoint(tmp_path: Path) -> None:
    from converters.__main__ import main

    assert main(["make-checkpoint", str(tmp_path / "ck"), "--size", "tiny", "--seed", "5"]) == 0
    assert main(["build", str(tmp_path / "ck"), "--out", str(tmp_path / "b"), "--towers", "text"]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["vision"] is None and "fp32" in manifest["text"]["variants"]
    assert main(["build", str(tmp_path / "ck"), "--out", str(tmp_path / "c"), "--towers", "audio"]) == 2
    assert main(["parity", str(tmp_path / "ck")]) == 2  # offline/no transformers: a clear error, exit 2


def test_large_constants_are_stored_once(tiny_bundle: Path) -> None:
    import onnx

    model = onnx.load(str(tiny_bundle / "vision.fp32.onnx"))
    big_constants = [n for n in model.graph.node if n.op_type == "Constant" and any(len(a.t.raw_data) >= 1024 for a in n.attribute)]
    assert big_constants == []
    rope = [t for t in model.graph.initializer if tuple(t.dims) == (1297, 8)]  # CLS + 36x36 patches, head_width/2
    assert len(rope) == 2  # one cos and one sin table, shared by every layer


def test_attention_is_fused_into_multi_head_attention(tiny_bundle: Path) -> None:
    """No Softmax left: vision has one MultiHeadAttention per layer, text an If per layer choosing
    the flash kernel (no padding) or the masked kernel. RoPE is one RotaryEmbedding node for q and
    one for k per layer, with no Neg left from a hand-written rotation."""
    import onnx

    vision = onnx.load(str(tiny_bundle / "vision.fp32.onnx"))
    text = onnx.load(str(tiny_bundle / "text.fp32.onnx"))
    layers = 2
    assert [n.op_type for n in vision.graph.node].count("MultiHeadAttention") == layers
    selects = [n for n in text.graph.node if n.op_type == "If"]
    assert len(selects) == layers
    for node in selects:
        branches = {a.name: a.g for a in node.attribute}
        assert [len(n.input) for n in branches["then_branch"].node] == [3]  # q, k, v: flash kernel
        assert [n.input[4] for n in branches["else_branch"].node][0].endswith("_int32")  # key padding mask
    for graph, interleaved in ((vision.graph, 1), (text.graph, 0)):
        assert not any(n.op_type in ("Softmax", "Attention") and n.domain in ("", "edgeclip") for n in graph.node)
        rotations = [n for n in graph.node if n.op_type == "RotaryEmbedding"]
        assert len(rotations) == 2 * layers
        assert all({a.name: a.i for a in n.attribute}["interleaved"] == interleaved for n in rotations)
        assert "Neg" not in {n.op_type for n in graph.node}


def test_a_full_disk_is_one_line_exit_1_and_leaves_nothing(tiny_checkpoint: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    from converters.__main__ import main as converters_main
    from converters.graph_data import DataFileWriter

    def full(self: DataFileWriter, name: str, array: np.ndarray) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(self.data_path))

    monkeypatch.setattr(DataFileWriter, "tensor", full)
    assert converters_main(["build", str(tiny_checkpoint), "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: No space left on device (") and "Traceback" not in err
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b*"))



@pytest.mark.parametrize("portable", [False, True], ids=["fused", "portable"])
def test_the_image_graph_traced_at_batch_1_is_the_one_traced_at_batch_2(tiny_checkpoint: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch, portable: bool) -> None:
    # export.sample_inputs traces images at batch 1 to save memory; a tracer that specialized the batch would show here.
    import onnx

    from converters import export
    from converters.config import load_clip_config
    from converters.specs import export_spec

    cfg = load_clip_config(tiny_checkpoint / "config.json")
    model, spec = load_reference(resolve_source(str(tiny_checkpoint)), "vision"), export_spec(cfg, "vision", None)
    for folder in ("b1", "b2"):
        (tmp_path / folder).mkdir()
    export.export_tower(model, cfg, spec, tmp_path / "b1" / "v.onnx", portable=portable)
    original = export.sample_inputs
    monkeypatch.setattr(export, "sample_inputs", lambda cfg, spec: original(cfg, spec, image_batch=2))
    export.export_tower(model, cfg, spec, tmp_path / "b2" / "v.onnx", portable=portable)
    one, two = (onnx.load(str(tmp_path / n / "v.onnx"), load_external_data=False) for n in ("b1", "b2"))
    assert one.graph.SerializeToString() == two.graph.SerializeToString()
    assert sha256_file(tmp_path / "b1" / "v.onnx.data") == sha256_file(tmp_path / "b2" / "v.onnx.data")
