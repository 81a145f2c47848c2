"""The int8 and int4 variants written straight from the fp32 graph on disk, one weight at a time.

int8: what ORT's `quantize_dynamic` (per-channel s8 weights) followed by `row_scales.apply_row_scales`
produced, in one pass that never holds more than one weight matrix: each MatMul with a constant
weight becomes a per-row activation quantizer, MatMulIntegerToFloat and the row-scale multiply, and
each token table read by a Gather over a graph input becomes int8 rows with per-row scales. The
weight arithmetic is ORT's own (symmetric, per output column, scale computed in float64 and stored
as float32, round half to even), so the weights are byte-identical to what `quantize_dynamic` writes
(tests/converters/test_quantized_graph.py checks it).

int4: MatMulNBits (block-wise 4-bit weights, what ORT's MatMulNBitsQuantizer writes), each weight
packed by ORT's own kernel (`quantize_matmul_4bits`), so the blocks are byte-identical too.

The full-size text graph is 2.2 GB of fp32; ORT's quantizers, which load and copy the whole graph,
peaked at ~7 GB (int8) and ~5.8 GB (int4) on it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from .graph_data import ROWS_PER_READ, DataFileWriter, GraphWeights, gathers_over_inputs, save_streamed
from .row_scales import prepare_graph, row_quantizer_nodes, scaled_gemm_nodes

@dataclass(frozen=True)
class MatMulFormat:
    kind: str  # "int8": per-row activations x per-channel s8 weights; "int4": MatMulNBits weight-only
    reduce_range: bool = True  # int8: 7-bit weights (accurate on AVX2 without VNNI)
    block_size: int = 32  # int4: weights per scale along K
    accuracy_level: int = 4  # int4: MatMulNBits compute type (4: int8 activations)


def weight_range(reduce_range: bool) -> tuple[int, int]:
    """ORT's symmetric int8 weight range: [-64, 64] with reduce_range (7-bit), else [-127, 127]."""
    return (-64, 64) if reduce_range else (-127, 127)


def quantize_columns(weight: np.ndarray, reduce_range: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric s8 per output column of a [K, N] MatMul weight, as ORT's quantize_data computes it."""
    qmin, qmax = weight_range(reduce_range)
    absmax = np.abs(weight).max(axis=0).astype(np.float64)
    scale64 = (absmax - (-absmax)) / float(qmax - qmin)
    scale = np.where(scale64 < np.finfo(np.float32).tiny, 1.0, scale64).astype(np.float32)
    quantized = np.clip(np.round(weight.astype(np.float32) / scale), -128, 127).astype(np.int8)
    return quantized, scale


def quantize_blocks(weight: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric 4-bit blocks of a [K, N] weight along K, packed by ORT's kernel: ([N, blocks, block/2], [N, blocks])."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    rows, cols = weight.shape
    blocks = -(-rows // block_size)
    padded = np.zeros((blocks * block_size, cols), np.float32)
    padded[:rows] = weight
    packed = np.zeros((cols, blocks, block_size // 2), np.uint8)
    scales = np.zeros((cols, blocks), np.float32)
    zero_points = np.zeros((cols, -(-blocks // 2)), np.uint8)  # unused: symmetric
    quantize_matmul_4bits(packed, padded, scales, zero_points, block_size, cols, rows, True)
    return packed, scales


def quantize_table_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token-table rows as int8 with one symmetric scale per row (max|row| / 127)."""
    rows = rows.astype(np.float32)
    scales = np.maximum(np.abs(rows).max(axis=1, keepdims=True), 1e-12) / 127.0
    return np.clip(np.rint(rows / scales), -127, 127).astype(np.int8), scales.astype(np.float32)


def _quantizable_matmuls(source: GraphWeights, exclude: Collection[str]) -> list[onnx.NodeProto]:
    found = []
    for node in source.model.graph.node:
        weight = source.initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and weight.data_type == TensorProto.FLOAT and len(weight.dims) == 2 and node.name not in exclude:
            found.append(node)
    return found


def _token_tables(source: GraphWeights) -> dict[str, list[onnx.NodeProto]]:
    """2-D float tables indexed by a graph input (the token-embedding lookup) -> the Gathers that read them."""
    return {name: nodes for name, nodes in gathers_over_inputs(source).items()
            if len(source.shape(name)) == 2 and source.initializers[name].data_type == TensorProto.FLOAT}


def _dequantizing_gather(node: onnx.NodeProto, table: str) -> list[onnx.NodeProto]:
    ids, out = node.input[1], node.output[0]
    return [
        helper.make_node("Gather", [f"{table}_int8", ids], [f"{out}_q"], name=f"{node.name}_q", axis=0),
        helper.make_node("Cast", [f"{out}_q"], [f"{out}_qf"], name=f"{node.name}_cast", to=TensorProto.FLOAT),
        helper.make_node("Gather", [f"{table}_row_scale", ids], [f"{out}_s"], name=f"{node.name}_scale", axis=0),
        helper.make_node("Mul", [f"{out}_qf", f"{out}_s"], [out], name=f"{node.name}_dequant"),
    ]


def write_quantized_graph(fp32_graph: Path, out_graph: Path, fmt: MatMulFormat, int8_token_table: bool,
                          exclude: Collection[str] = ()) -> tuple[list[Path], int]:
    """Write the quantized graph of `fp32_graph` to `out_graph` + `.data`. Returns the files and the MatMul count."""
    source = GraphWeights(fp32_graph)
    matmuls = _quantizable_matmuls(source, exclude)
    tables = _token_tables(source) if int8_token_table else {}
    model = source.model
    replaced = {node.output[0] for node in matmuls} | {node.output[0] for nodes in tables.values() for node in nodes}
    still_read = _inputs_read_by_other_nodes(model.graph, replaced)
    weights = {node.input[1] for node in matmuls}

    def quantized(tensor: TensorProto, writer: DataFileWriter) -> list[TensorProto] | None:
        name = tensor.name
        if name not in weights and name not in tables:
            return None
        written = _write_weight(source, writer, name, fmt) if name in weights else _write_table(source, writer, name)
        return written + ([writer.tensor(name, source.read(name))] if name in still_read else [])

    _rewrite_nodes(model, matmuls, tables, fmt, source)
    if fmt.kind == "int8":
        prepare_graph(model)
    return save_streamed(source, out_graph, quantized), len(matmuls)


def _inputs_read_by_other_nodes(graph: onnx.GraphProto, replaced: set[str]) -> set[str]:
    """Names read by nodes that stay (subgraphs included): a weight they share keeps its float copy."""
    names: set[str] = set()
    for node in graph.node:
        if node.output[0] not in replaced:
            names.update(node.input)
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                names |= _inputs_read_by_other_nodes(subgraph, set())
    return names


def _write_weight(source: GraphWeights, writer: DataFileWriter, name: str, fmt: MatMulFormat) -> list[TensorProto]:
    weight = source.read(name)
    if fmt.kind == "int4":
        packed, scales = quantize_blocks(weight, fmt.block_size)
        return [writer.tensor(f"{name}_Q4", packed), writer.tensor(f"{name}_scales", scales)]
    quantized, scale = quantize_columns(weight, fmt.reduce_range)
    return [writer.tensor(f"{name}_quantized", quantized), writer.tensor(f"{name}_scale", scale),
            writer.tensor(f"{name}_zero_point", np.zeros(scale.shape, np.int8))]


def _write_table(source: GraphWeights, writer: DataFileWriter, name: str) -> list[TensorProto]:
    rows, width = source.shape(name)
    stream = writer.rows(f"{name}_int8", np.dtype(np.int8), (rows, width))
    scales = []
    for start in range(0, rows, ROWS_PER_READ):
        quantized, chunk_scales = quantize_table_rows(source.read(name, slice(start, start + ROWS_PER_READ)))
        stream.write(quantized)
        scales.append(chunk_scales)
    return [stream.finish(), writer.tensor(f"{name}_row_scale", np.concatenate(scales))]


def _rewrite_nodes(model: onnx.ModelProto, matmuls: list[onnx.NodeProto], tables: dict[str, list[onnx.NodeProto]],
                   fmt: MatMulFormat, source: GraphWeights) -> None:
    """Replace each MatMul and table Gather in place, keeping topological order; a shared int8 input is quantized once."""
    replaced = {node.output[0] for node in matmuls}
    gathers = {node.output[0]: table for table, nodes in tables.items() for node in nodes}
    quantized_inputs: set[str] = set()
    new_nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.output[0] in replaced and fmt.kind == "int4":
            k, n = source.shape(node.input[1])
            w = node.input[1]
            new_nodes.append(helper.make_node(
                "MatMulNBits", [node.input[0], f"{w}_Q4", f"{w}_scales"], [node.output[0]], name=f"{node.name}_Q4",
                domain="com.microsoft", K=k, N=n, bits=4, block_size=fmt.block_size, accuracy_level=fmt.accuracy_level))
        elif node.output[0] in replaced:
            x, w = node.input[0], node.input[1]
            if x not in quantized_inputs:
                quantized_inputs.add(x)
                new_nodes += row_quantizer_nodes(x, f"{x}_quantized", f"{x}_scale", node.name or x)
            new_nodes += scaled_gemm_nodes(f"{x}_quantized", f"{x}_scale", f"{w}_quantized", f"{w}_scale",
                                           f"{w}_zero_point", node.output[0], node.name or node.output[0])
        elif node.output[0] in gathers:
            new_nodes += _dequantizing_gather(node, gathers[node.output[0]])
        else:
            new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    if fmt.kind == "int4" and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
