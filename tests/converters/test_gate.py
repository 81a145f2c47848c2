"""The validation gate: metrics, figures in the manifest, and rejection of a damaged variant."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, numpy_helper  # noqa: E402

import edgeclip  # noqa: E402
from converters.__main__ import main as converters_main  # noqa: E402
from converters.build import BuildOptions, build_bundle  # noqa: E402
from converters.errors import ConverterError  # noqa: E402
from converters.gate import (  # noqa: E402
    DEFAULT_THRESHOLDS, GateFailed, check_thresholds, cosine_figures, retrieval_agreement, run_gate)
from converters.validation_set import LANGUAGE_GROUPS, validation_images, validation_texts  # noqa: E402
from edgeclip.bundle import MANIFEST_FILE, Bundle  # noqa: E402
from edgeclip.cli import info_text  # noqa: E402
from converters.package import file_entry  # noqa: E402


@pytest.fixture(scope="module")
def gated_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gate") / "bundle"
    build_bundle(str(tiny_checkpoint), out, BuildOptions(variants=("int8", "fp16")))
    return out


def test_validation_set_is_large_and_varied() -> None:
    texts = validation_texts()
    assert len(texts) >= 200 and len({t.lang for t in texts}) >= 20
    assert {t.group for t in texts} == set(LANGUAGE_GROUPS)
    assert {"sw", "yo", "am", "km"} <= {t.lang for t in texts}  # low-resource languages are in
    images = validation_images()
    assert len(images) >= 20
    from PIL import Image

    sizes = {Image.open(p).size for p in images}
    modes = {Image.open(p).mode for p in images}
    assert len(sizes) >= 15 and {"RGB", "L"} <= modes
    assert min(w * h for w, h in sizes) < 100 * 100 and max(w * h for w, h in sizes) > 512 * 512


def test_retrieval_agreement_counts_changed_neighbours() -> None:
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((10, 8))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = gallery[:4] + 0.01 * rng.standard_normal((4, 8))  # nearest neighbour of query i is gallery i
    assert retrieval_agreement(queries, gallery, queries, gallery) == {"top1": 1.0, "top5": 1.0}
    moved = gallery.copy()
    moved[[0, 1]] = moved[[1, 0]]  # swap two gallery items: queries 0 and 1 now find the other one
    assert retrieval_agreement(queries, gallery, queries, moved)["top1"] == 0.5
    figures = cosine_figures(np.eye(3), np.array([[1.0, 0, 0], [0, 1, 0], [0, 0.6, 0.8]]))
    assert figures["cosine_min"] == pytest.approx(0.8) and figures["cosine_mean"] == pytest.approx(2.8 / 3)


# Random weights make retrieval agreement a coin toss near any threshold (int8 numerics also differ
# between AVX2, VNNI and AMX CPUs): the gate tests switch the retrieval thresholds off and decide on
# cosine, where a good variant (>= 0.999) and a damaged one (< 0.9) sit far from the line. The
# retrieval arithmetic is checked on hand-made embeddings instead.
NO_RETRIEVAL = ["--min-top1", "0", "--min-top5", "0"]


def test_check_thresholds_flags_each_metric_below_its_floor() -> None:
    figures = {"cosine_mean": 0.999, "cosine_p1": 0.97, "retrieval": {"text_to_image": {"top1": 0.5, "top5": 0.9}},
               "groups": {"latin": {"cosine_mean": 0.95, "cosine_p1": 0.999}}}
    failures = check_thresholds("text", "int8", figures, DEFAULT_THRESHOLDS["int8"])
    assert failures == ["text/int8: cosine_p1 (worst 1 %) 0.9700 < 0.98", "text/int8: text_to_image top1 agreement 0.5000 < 0.8",
                        "text/int8: [latin] cosine_mean 0.9500 < 0.99"]


def test_gate_passes_good_variants_and_records_figures(gated_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert converters_main(["validate", str(gated_bundle), "--device", "auto", *NO_RETRIEVAL]) == 0
    out = capsys.readouterr().out
    assert "reference on CPU" in out and "gate passed" in out
    bundle = Bundle.open(gated_bundle)
    for tower in ("text", "vision"):
        for name in ("int8", "fp16"):
            gate = bundle.variant(tower, name).validation["gate"]
            assert gate["passed"] and gate["cosine_p1"] > 0.99
            assert set(gate["retrieval"]) >= {"text_to_image", "image_to_text"}
            assert all(0 <= v["top1"] <= 1 and 0 <= v["top5"] <= 1 for v in gate["retrieval"].values())
        assert "gate" not in bundle.variant(tower, "fp32").validation
    assert set(bundle.variant("text", "int8").validation["gate"]["groups"]) == set(LANGUAGE_GROUPS)
    assert "gate vs fp32 (passed): cosine mean" in info_text(bundle)


def test_threshold_flags_make_the_gate_stricter(gated_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "b"
    shutil.copytree(gated_bundle, copy)
    assert converters_main(["validate", str(copy), "--variants", "int8", "--min-cosine-p1", "0.9999999", *NO_RETRIEVAL]) == 1
    err = capsys.readouterr().err
    assert "text/int8: cosine_p1 (worst 1 %)" in err and "vision/int8: cosine_p1" in err and "fp16" not in err
    assert Bundle.open(copy).variant("text", "int8").validation["gate"]["passed"] is False
    with pytest.warns(RuntimeWarning, match="failed the validation gate"):
        edgeclip.load(copy, variant="int8").encode_text("x")


def _refresh_file_entries(bundle_dir: Path) -> None:
    """Re-hash every file, as a rebuilt (not tampered) bundle would have it."""
    bundle = Bundle.open(bundle_dir)
    m = bundle.manifest

    def fresh(variant: edgeclip.bundle.Variant) -> edgeclip.bundle.Variant:
        return dataclasses.replace(variant, files=tuple(file_entry(bundle_dir, bundle_dir / f.path) for f in variant.files))

    text = dataclasses.replace(m.text, variants={n: fresh(v) for n, v in m.text.variants.items()})
    (bundle_dir / MANIFEST_FILE).write_text(dataclasses.replace(m, text=text).to_json())


def test_gate_rejects_a_damaged_script(gated_bundle: Path, tmp_path: Path) -> None:
    """Scramble the int8 token-table rows that Cyrillic/Greek text uses: the gate names that group."""
    copy = tmp_path / "b"
    shutil.copytree(gated_bundle, copy)
    tokenizer = edgeclip.load(copy)._text_tokenizer()
    cyrillic = [t.text for t in validation_texts() if t.group == "cyrillic-greek"]
    others = [t.text for t in validation_texts() if t.group != "cyrillic-greek"]
    only_cyrillic = set().union(*map(set, tokenizer.encode(cyrillic, 512))) - set().union(*map(set, tokenizer.encode(others, 512)))
    assert len(only_cyrillic) > 20
    graph = copy / "text.int8.onnx"
    model = onnx.load(str(graph))
    table = next(t for t in model.graph.initializer if t.data_type == TensorProto.INT8 and len(t.dims) == 2 and t.dims[0] > 1000)
    values = numpy_helper.to_array(table).copy()
    rows = sorted(only_cyrillic)
    values[rows] = np.random.default_rng(0).integers(-127, 128, values[rows].shape)
    table.CopyFrom(numpy_helper.from_array(values, table.name))
    onnx.save_model(model, str(graph))
    _refresh_file_entries(copy)
    with pytest.raises(GateFailed) as info:
        run_gate(copy, "cpu", ("int8",), overrides={"top1": 0.0, "top5": 0.0})
    failures = info.value.failures
    assert any("text/int8: [cyrillic-greek] cosine_mean" in f for f in failures)
    assert not any("[latin]" in f or f.startswith("vision/") for f in failures)  # the others are untouched
    assert Bundle.open(copy).variant("text", "int8").validation["gate"]["passed"] is False


def test_gate_needs_variants_and_a_real_cuda(tiny_bundle: Path, gated_bundle: Path) -> None:
    with pytest.raises(ConverterError, match="nothing to gate.*fp32 only.*--variants"):
        run_gate(tiny_bundle)
    with pytest.raises(ConverterError, match="variant.*int4.*not in the bundle"):
        run_gate(gated_bundle, variants=("int4",))
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConverterError, match="--device cuda: this onnxruntime has no CUDAExecutionProvider"):
            run_gate(gated_bundle, device="cuda")


def test_the_pytorch_reference_can_be_the_full_precision_side(gated_bundle: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(gated_bundle, copy)
    results = run_gate(copy, "auto", ("fp32", "int8"), reference="torch", checkpoint=str(tiny_checkpoint))
    for tower in ("text", "vision"):
        assert results[f"{tower}/fp32"]["cosine_p1"] > 0.99999  # the fp32 graph is the PyTorch function
        assert results[f"{tower}/fp32"]["reference_device"].startswith("PyTorch ")
        assert results[f"{tower}/int8"]["cosine_mean"] > 0.99
    assert Bundle.open(copy).variant("text", "fp32").validation["gate"]["passed"] is True


def test_the_pytorch_reference_refuses_a_checkpoint_the_bundle_was_not_built_from(gated_bundle: Path, tmp_path: Path,
                                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from converters.make_checkpoint import make_checkpoint

    other = make_checkpoint(tmp_path / "other", size="tiny", seed=1)
    assert converters_main(["validate", str(gated_bundle), "--reference", "torch", "--checkpoint", str(other)]) == 2
    assert "is not the file this bundle was built from" in capsys.readouterr().err
