"""Quantized and fp16 variants: recipes, the int8 token table, runtime choice, and rejection of bad graphs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
import onnx  # noqa: E402
from onnx import TensorProto, numpy_helper  # noqa: E402

import edgeclip  # noqa: E402
from edgeclip.machine import FULL_RANGE_VARIANTS, saturates_full_range_int8  # noqa: E402
from converters import build as build_module  # noqa: E402
from converters.build import BuildOptions, build_bundle  # noqa: E402
from converters.errors import ConverterError, ToleranceExceeded  # noqa: E402
from converters.quantize import RECIPES  # noqa: E402
from converters.validate import LOSSY_MIN_COSINE  # noqa: E402


@pytest.fixture(scope="module")
def variant_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("variants") / "bundle"
    build_bundle(str(tiny_checkpoint), out, BuildOptions(variants=("int8", "int8-vnni", "int4", "fp16", "int8-vnni-attn")))
    return out


def test_every_recipe_has_a_rationale() -> None:
    assert set(RECIPES) == {"fp16", "int8", "int8-vnni", "int4", "int8-vnni-attn"}
    assert all(len(r.rationale) > 20 and name.startswith(r.precision) for name, r in RECIPES.items())


def test_variants_are_built_validated_and_described(variant_bundle: Path) -> None:
    bundle = edgeclip.Bundle.open(variant_bundle)
    for tower in ("text", "vision"):
        variants = bundle.tower(tower).variants
        attention = {"int8-vnni-attn"} if tower == "vision" else set()  # an image-tower recipe
        assert set(variants) == {"fp32", "int8", "int8-vnni", "int4", "fp16"} | attention
        for name, variant in variants.items():
            assert variant.precision == name.split("-")[0] and variant.graph == f"{tower}.{name}.onnx"
            figures = variant.validation["reference"]
            if name in FULL_RANGE_VARIANTS and saturates_full_range_int8():  # this CPU cannot run it exactly: not gated here
                assert figures == {} and "not validated on this CPU" in variant.validation["deferred"]
                continue
            floor = 0.99999 if name == "fp32" else LOSSY_MIN_COSINE[variant.precision]
            assert figures and all(case["min_cosine"] >= floor for case in figures.values())
    attention = bundle.tower("vision").variants["int8-vnni-attn"]  # its own graph file, int8-vnni's weights file
    assert [f.path for f in attention.files] == ["vision.int8-vnni-attn.onnx", "vision.int8-vnni.onnx.data"]
    assert not (variant_bundle / "vision.int8-vnni-attn.onnx.data").exists()
    sizes = {n: sum(f.size for f in v.files) for n, v in bundle.tower("text").variants.items()}
    assert sizes["int4"] < sizes["int8"] < sizes["fp16"] < sizes["fp32"]
    # The int8 text graph stores the token table as int8 (plus one fp32 scale per row).
    model = onnx.load(str(variant_bundle / "text.int8.onnx"))
    tables = [t for t in model.graph.initializer if len(t.dims) == 2 and t.dims[1] == 64 and t.dims[0] > 1000]
    assert tables and all(t.data_type == TensorProto.INT8 for t in tables)


def test_int8_vnni_is_built_but_not_gated_where_int16_sums_saturate(tiny_checkpoint: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """On x86 without VNNI/AMX, ONNX Runtime's u8 x s8 kernels add products in int16 and saturate with
    int8-vnni's full-range weights (measured: vision min cosine 0.967 on an AVX2 EPYC, under the 0.98
    gate), so building the default variants there must not fail on a graph the runtime never runs there."""
    monkeypatch.setattr(build_module, "saturates_full_range_int8", lambda: True)
    bundle = build_bundle(str(tiny_checkpoint), tmp_path / "b", BuildOptions(towers=("text",), variants=("int8", "int8-vnni")))
    variants = bundle.tower("text").variants
    assert variants["int8"].validation["reference"]  # the others are validated as always
    assert variants["int8-vnni"].validation["reference"] == {}
    assert "python -m converters validate BUNDLE --variants int8-vnni" in variants["int8-vnni"].validation["deferred"]
    assert any("not validated on this CPU" in r.getMessage() for r in caplog.records)
    from edgeclip.cli.info import info_text

    assert "not validated on the build machine" in info_text(bundle)


def test_the_runtime_warns_when_int8_vnni_is_forced_where_it_saturates(variant_bundle: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeclip import model as model_module

    monkeypatch.setattr(model_module, "saturates_full_range_int8", lambda: True)
    with pytest.warns(RuntimeWarning, match="int8-vnni graphs need a CPU with int8 dot products"):
        edgeclip.load(variant_bundle, variant="int8-vnni").encode_text(["x"])
    monkeypatch.setattr(model_module, "saturates_full_range_int8", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edgeclip.load(variant_bundle, variant="int8-vnni").encode_text(["x"])


def _weight_range(graph: Path) -> int:
    """The largest |value| over the graph's int8 MatMul weights (not the token table)."""
    model = onnx.load(str(graph))
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer
               if t.data_type == TensorProto.INT8 and len(t.dims) == 2 and t.dims[0] < 1000]
    return max(int(np.abs(w.astype(np.int16)).max()) for w in weights)


def test_int8_vnni_keeps_full_range_weights_and_int8_seven_bits(variant_bundle: Path) -> None:
    assert _weight_range(variant_bundle / "text.int8.onnx") <= 64  # reduce_range: 7-bit, safe from int16 saturation
    assert _weight_range(variant_bundle / "text.int8-vnni.onnx") == 127


@pytest.mark.parametrize(("cpu", "expected"), [("avx2", "int8"), ("avx512", "int8"), ("x86", "int8"), ("arm", "int8"),
                                               ("avx512-vnni", "int8-vnni"), ("avx-vnni", "int8-vnni"),
                                               ("amx", "int8-vnni"), ("arm-dotprod", "int8-vnni")])
def test_runtime_picks_the_int8_graph_for_the_cpu_class(variant_bundle: Path, tiny_bundle: Path, cpu: str, expected: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECLIP_CPU_CLASS", cpu)
    model = edgeclip.load(variant_bundle)
    # images take int8 attention too where the CPU has int8 dot products; texts keep the fp32 attention kernel
    assert model.variant_name("text") == expected
    # int8 attention is the image default only on the class it was measured on
    assert model.variant_name("vision") == ("int8-vnni-attn" if cpu == "avx512-vnni" else expected)
    assert edgeclip.load(tiny_bundle).variant_name("text") == "fp32"  # a bundle with neither int8 graph: fp32
    assert edgeclip.load(variant_bundle, variant="int8").variant_name("text") == "int8"  # asked for: kept
    attention = edgeclip.load(variant_bundle, variant="int8-vnni-attn")  # an image-only variant: texts run int8-vnni
    assert (attention.variant_name("text"), attention.variant_name("vision")) == ("int8-vnni", "int8-vnni-attn")


def test_an_unknown_cpu_class_override_is_refused(variant_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECLIP_CPU_CLASS", "pentium")
    with pytest.raises(edgeclip.EdgeClipError, match="EDGECLIP_CPU_CLASS='pentium' is not one of amx"):
        edgeclip.load(variant_bundle).variant_name("text")


def test_runtime_picks_int8_on_cpu_and_warns_about_fp16(variant_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECLIP_CPU_CLASS", "avx2")
    model = edgeclip.load(variant_bundle)
    assert model.variant_name("text") == "int8" and model.variant_name("vision") == "int8"
    fp32 = edgeclip.load(variant_bundle, variant="fp32").encode_text(["a red bicycle", "un vélo rouge"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # int8 on CPU: no warning
        int8 = model.encode_text(["a red bicycle", "un vélo rouge"])
    assert (int8 * fp32).sum(axis=1).min() > 0.99
    with pytest.warns(RuntimeWarning, match="fp16 graphs are slower than fp32 on the CPU"):
        edgeclip.load(variant_bundle, variant="fp16").encode_text("x")


def test_unknown_variant_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ConverterError, match="unknown variant.*int3.*choose from fp32, fp32-portable, fp16, int8, int8-vnni, int8-vnni-attn, int4"):
        build_bundle(str(tiny_checkpoint), tmp_path / "b", BuildOptions(variants=("int3",)))


def test_a_corrupted_variant_is_rejected(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = build_module.quantize_graph

    def corrupting(fp32_path: Path, recipe, out_path: Path) -> list[Path]:  # noqa: ANN001
        files = real(fp32_path, recipe, out_path)
        model = onnx.load(str(files[0]))
        for tensor in model.graph.initializer:  # perturb every float weight by 50 % noise
            if tensor.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16) and len(tensor.dims) == 2:
                values = numpy_helper.to_array(tensor)
                noise = np.random.default_rng(0).standard_normal(values.shape)
                noisy = (values + 0.5 * np.abs(values).mean() * noise).astype(values.dtype)
                tensor.CopyFrom(numpy_helper.from_array(noisy, tensor.name))
        onnx.save_model(model, str(files[0]))
        return files

    monkeypatch.setattr(build_module, "quantize_graph", corrupting)
    with pytest.raises(ToleranceExceeded, match="text/fp16/.*min_cosine") as info:
        build_bundle(str(tiny_checkpoint), tmp_path / "b", BuildOptions(towers=("text",), variants=("fp16",)))
    assert all("/fp16/" in failure for failure in info.value.failures)
    assert list(tmp_path.iterdir()) == []
