"""Quantized and half-precision variants of an exported fp32 tower graph, as named recipes.

Measured pitfalls on this AVX2-without-VNNI CPU (shared/docs/cpu-limits.md) decide the defaults:
u8 activations x s8 weights is the fast integer path; s8 weights need reduce_range (7-bit) to stay
accurate without VNNI; MatMulNBits int4 pays at small batch only.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .export import save_graph
from .row_scales import apply_row_scales

log = logging.getLogger(__name__)


@contextlib.contextmanager
def held_back_logs(label: str) -> Iterator[None]:
    """ORT's quantizers log a line per tensor (~190-230 per full-size tower) and a pre-processing hint: hold those
    back and say how many there were. With `--verbose` (DEBUG on the converters logger) all pass."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    held: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        if record.name.startswith("converters") or record.levelno >= logging.ERROR:
            return True
        held.append(record)
        return False

    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(keep)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(keep)
        if held:
            log.info("%s: %d quantizer log lines held back (--verbose shows them)", label, len(held))


@dataclass(frozen=True)
class QuantRecipe:
    name: str  # variant name in the bundle
    precision: str  # weights' storage precision, recorded in the manifest
    rationale: str  # one line: why this recipe looks the way it does
    nodes_to_exclude: tuple[str, ...] = ()  # MatMul node names kept in float (validation found them sensitive)
    int8_embedding_table: bool = False  # store the token-embedding table as int8 with per-row scales
    reduce_range: bool = True  # 7-bit weights: what AVX2 without VNNI needs to stay accurate


RECIPES: dict[str, QuantRecipe] = {
    "fp16": QuantRecipe(
        "fp16", "fp16",
        "Half the size for GPU execution providers; inputs/outputs stay fp32. Slow on CPUs (casts, no fp16 GEMM).",
    ),
    "int8": QuantRecipe(
        "int8", "int8",
        "Dynamic u8 activations x s8 per-channel weights with reduce_range (accurate without VNNI), the fast CPU path; "
        "activation scales per row (token/patch), so an item embeds the same alone or in any batch; "
        "the 250002x1024 token table as int8 with per-row scales (~1 GB -> ~250 MB).",
        int8_embedding_table=True,
    ),
    "int8-vnni": QuantRecipe(
        "int8-vnni", "int8",
        "As int8 but full-range s8 weights (no reduce_range): exact on CPUs with int8 dot products (AVX-VNNI, "
        "AVX-512 VNNI, AMX, ARM dotprod), chosen there at load; wrong on AVX2 without VNNI (int16 saturation).",
        int8_embedding_table=True, reduce_range=False,
    ),
    "int4": QuantRecipe(
        "int4", "int4",
        "Weight-only MatMulNBits (block 32, symmetric, accuracy_level 4): least bandwidth for short queries; "
        "token table int8 per-row.",
        int8_embedding_table=True,
    ),
}


def _weight_gathers(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, TensorProto]]:
    """Gather nodes that index a 2-D float initializer by a graph input (the token-embedding lookup)."""
    inits = {t.name: t for t in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input}
    found = []
    for node in model.graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        if table is not None and len(table.dims) == 2 and table.data_type == TensorProto.FLOAT and node.input[1] in graph_inputs:
            found.append((node, table))
    return found


def quantize_embedding_tables(model: onnx.ModelProto) -> int:
    """Gather(W_fp32, ids) -> Gather(W_int8, ids) * Gather(scale, ids); symmetric per-row scales. Returns count."""
    count = 0
    for node, table in _weight_gathers(model):
        weights = numpy_helper.to_array(table).astype(np.float32)
        scales = np.maximum(np.abs(weights).max(axis=1, keepdims=True), 1e-12) / 127.0
        quantized = np.clip(np.rint(weights / scales), -127, 127).astype(np.int8)
        base = table.name
        model.graph.initializer.remove(table)
        model.graph.initializer.extend([
            numpy_helper.from_array(quantized, f"{base}_int8"),
            numpy_helper.from_array(scales.astype(np.float32), f"{base}_row_scale"),
        ])
        ids, out = node.input[1], node.output[0]
        new_nodes = [
            helper.make_node("Gather", [f"{base}_int8", ids], [f"{out}_q"], name=f"{node.name}_q", axis=0),
            helper.make_node("Cast", [f"{out}_q"], [f"{out}_qf"], name=f"{node.name}_cast", to=TensorProto.FLOAT),
            helper.make_node("Gather", [f"{base}_row_scale", ids], [f"{out}_s"], name=f"{node.name}_scale", axis=0),
            helper.make_node("Mul", [f"{out}_qf", f"{out}_s"], [out], name=f"{node.name}_dequant"),
        ]
        position = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for offset, new in enumerate(new_nodes):
            model.graph.node.insert(position + offset, new)
        count += 1
    return count


def quantize_graph(fp32_path: Path, recipe: QuantRecipe, out_path: Path) -> list[Path]:
    """Write the recipe's variant of `fp32_path` to `out_path` (+ external data if large). Returns the files."""
    with held_back_logs(f"{out_path.name}"):
        model = _quantized(fp32_path, recipe, out_path)
    if recipe.int8_embedding_table:
        quantize_embedding_tables(model)
    return save_graph(model, out_path)


def _quantized(fp32_path: Path, recipe: QuantRecipe, out_path: Path) -> onnx.ModelProto:
    if recipe.precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    elif recipe.precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".quant-") as scratch:
            tmp = Path(scratch) / "q.onnx"
            quantize_dynamic(
                str(fp32_path), str(tmp), op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=recipe.reduce_range,
                weight_type=QuantType.QInt8, nodes_to_exclude=list(recipe.nodes_to_exclude),
                use_external_data_format=True,
            )
            model = onnx.load(str(tmp))
        rewritten = apply_row_scales(model)
        log.info("%s: %d activation quantizers made per-row", out_path.name, rewritten)
    elif recipe.precision == "int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32_path)), block_size=32, is_symmetric=True, accuracy_level=4,
                                         nodes_to_exclude=list(recipe.nodes_to_exclude))
        quantizer.process()
        model = quantizer.model.model
    else:
        raise ValueError(f"unknown precision {recipe.precision!r}")
    return model
