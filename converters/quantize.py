"""Quantized and half-precision variants of an exported fp32 tower graph, as named recipes.

Measured pitfalls on this AVX2-without-VNNI CPU (shared/docs/cpu-limits.md) decide the defaults:
u8 activations x s8 weights is the fast integer path; s8 weights need reduce_range (7-bit) to stay
accurate without VNNI; MatMulNBits int4 pays at small batch only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgeclip.session import external_data_locations

from .attention_int8 import quantize_attention
from .export import save_graph
from .quantized_graph import MatMulFormat, write_quantized_graph

log = logging.getLogger(__name__)


@contextlib.contextmanager
def held_back_logs(label: str) -> Iterator[None]:
    """ORT's converters log a line per tensor and hints: hold those
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
    towers: tuple[str, ...] = ("text", "vision")  # the towers the recipe is built for
    int8_attention: bool = False  # attention's QK^T in int8 too (converters/attention_int8.py)


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
    "int8-vnni-attn": QuantRecipe(
        "int8-vnni-attn", "int8",
        "As int8-vnni, plus attention's QK^T in int8 (query scale per head, key scale per key; PV stays fp32: in int8 "
        "it cost cosine on long real-weight texts). Image tower only (on short texts the fp32 flash kernel wins): "
        "1.00-1.12x int8-vnni on a 512 px image (1,297 tokens) on an AVX-512 VNNI CPU, the runtime's image default there.",
        int8_embedding_table=True, reduce_range=False, towers=("vision",), int8_attention=True,
    ),
    "int4": QuantRecipe(
        "int4", "int4",
        "Weight-only MatMulNBits (block 32, symmetric, accuracy_level 4): least bandwidth for short queries; "
        "token table int8 per-row.",
        int8_embedding_table=True,
    ),
}


def with_int8_attention(graph_path: Path, out_path: Path) -> None:
    """Rewrite graph_path's attention (converters/attention_int8.py) into out_path; the weights stay where they are."""
    graph = onnx.load(str(graph_path), load_external_data=False)
    log.info("%s: %d attention nodes with QK^T in int8", out_path.name, quantize_attention(graph))
    onnx.save(graph, str(out_path))


def attention_variant_of(int8_graph: Path, out_path: Path) -> list[Path]:
    """int8-vnni-attn from an int8-vnni graph already written: its own small graph file reading the int8-vnni
    weights file, which the two variants share (the weights are identical; ~315 MB not written twice)."""
    with_int8_attention(int8_graph, out_path)
    data = sorted(int8_graph.parent / name for name in external_data_locations(int8_graph))
    return [out_path, *data]


def quantize_graph(fp32_path: Path, recipe: QuantRecipe, out_path: Path) -> list[Path]:
    """Write the recipe's variant of `fp32_path` to `out_path` + `<name>.data`. Returns the files.

    int8 and int4 are written weight by weight from the fp32 graph on disk (converters/quantized_graph.py);
    fp16 converts the graph in memory (ORT's converter; not a CPU variant, so not part of the lean build)."""
    if recipe.precision in ("int8", "int4"):
        fmt = MatMulFormat(recipe.precision, reduce_range=recipe.reduce_range)
        files, count = write_quantized_graph(fp32_path, out_path, fmt, recipe.int8_embedding_table, recipe.nodes_to_exclude)
        log.info("%s: %d MatMuls quantized%s", out_path.name, count,
                 ", token table int8 per row" if recipe.int8_embedding_table else "")
        if recipe.int8_attention:
            with_int8_attention(out_path, out_path)
        return files
    if recipe.precision != "fp16":
        raise ValueError(f"unknown precision {recipe.precision!r}")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with held_back_logs(out_path.name):
        model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    return save_graph(model, out_path)
