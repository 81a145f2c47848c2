"""Per-row activation scales for dynamically quantized MatMuls: an embedding must not depend on its batch-mates.

ORT's `quantize_dynamic` emits DynamicQuantizeLinear, which picks ONE scale and zero point for the whole
activation tensor: every row of every item in the batch, padding included. A text's int8 embedding then
changes with what it is batched with (measured: cosine 0.9991 between batch orders), which a server that
batches concurrent requests cannot allow. This pass gives each token (text) or patch (image) row its own
symmetric scale, max|row| / 127:

    DynamicQuantizeLinear(x) -> MatMulInteger -> Cast -> Mul(x_scale * w_scale)
becomes
    q = QuantizeLinear(x / row_scale, 1, 128) -> MatMulIntegerToFloat(q, W, 1, w_scale, 128, w_zp) -> Mul(row_scale)

ORT's integer GEMMs take only a scalar activation zero point, so the symmetric int8 rows are stored as
uint8 around a fixed zero point of 128: the kernel stays the fast u8 x s8 path that reduce_range was tuned
for. MatMulIntegerToFloat applies the per-channel weight scales inside the GEMM; only the row scale is a
separate multiply. (Leaving the Cast/Mul chain in place with a broadcast row scale is not safe: ORT 1.32's
MatMulIntegerToFloat fusion folds it as if the scale were per-tensor and the outputs come out wrong.)
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

ZERO_POINT = 128  # symmetric int8 in uint8 storage: q in [-127, 127] is stored as q + 128 in [1, 255]
MIN_SCALE = 1e-12  # an all-zero row quantizes to zeros instead of dividing by zero
CONSTANTS = {
    "rowq_min_amax": np.array(MIN_SCALE * 127.0, dtype=np.float32),
    "rowq_inv127": np.array(1.0 / 127.0, dtype=np.float32),
    "rowq_one": np.array(1.0, dtype=np.float32),
    "rowq_zero_point": np.array(ZERO_POINT, dtype=np.uint8),
}


class _Graph:
    """Producer/consumer maps over a graph that is being rewritten."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self.producer: dict[str, onnx.NodeProto] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers[name].append(node)
            for name in node.output:
                self.producer[name] = node

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        found = self.consumers.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None


def prepare_graph(model: onnx.ModelProto) -> None:
    """Add the com.microsoft domain and the shared constants the rewritten GEMMs use."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= 18:  # ReduceMax takes `axes` as an input from opset 18
        raise NotImplementedError("per-row scales are written for opset <= 17 graphs (ReduceMax axes attribute)")
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    present = {t.name for t in model.graph.initializer}
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in CONSTANTS.items() if k not in present)


def apply_row_scales(model: onnx.ModelProto) -> int:
    """Rewrite every DynamicQuantizeLinear whose consumers all match the quantize_dynamic pattern.

    Returns how many were rewritten; any other DynamicQuantizeLinear is left as it is."""
    graph = _Graph(model)
    prepare_graph(model)
    count = 0
    for node in list(model.graph.node):
        if node.op_type != "DynamicQuantizeLinear":
            continue
        chains = [_gemm_chain(graph, gemm, node) for gemm in graph.consumers[node.output[0]]]
        if not chains or any(chain is None for chain in chains):
            continue
        position = list(model.graph.node).index(node)
        new_nodes = _row_quantizer(node)
        for chain in chains:
            assert chain is not None
            new_nodes += _scaled_gemm(node, *chain)
            for old in chain:
                model.graph.node.remove(old)
        model.graph.node.remove(node)
        for offset, new in enumerate(new_nodes):
            model.graph.node.insert(position + offset, new)
        count += 1
    return count


ChainNodes = tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto, onnx.NodeProto]


def _gemm_chain(graph: _Graph, gemm: onnx.NodeProto, quant: onnx.NodeProto) -> ChainNodes | None:
    """(MatMulInteger, Mul(x_scale, w_scale), Cast, Mul(cast, scales)) as quantize_dynamic writes them, else None."""
    if gemm.op_type != "MatMulInteger" or len(gemm.input) != 4 or gemm.input[0] != quant.output[0]:
        return None
    cast = graph.only_consumer(gemm.output[0], "Cast")
    final = graph.only_consumer(cast.output[0], "Mul") if cast is not None else None
    if cast is None or final is None:
        return None
    scales_name = final.input[1] if final.input[0] == cast.output[0] else final.input[0]
    scales = graph.producer.get(scales_name)
    if scales is None or scales.op_type != "Mul" or quant.output[1] not in scales.input:
        return None
    if len(graph.consumers[scales.output[0]]) != 1:
        return None
    return gemm, scales, cast, final


def _row_quantizer(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    return row_quantizer_nodes(node.input[0], node.output[0], node.output[1], node.name or node.input[0])


def row_quantizer_nodes(x: str, quantized: str, scale: str, tag: str) -> list[onnx.NodeProto]:
    """x -> q (uint8) and the row scale (..., 1): scale = max|row| / 127, q = round(x / scale) + 128."""
    t = f"{tag}/row"
    return [
        helper.make_node("Abs", [x], [f"{t}/abs"], name=f"{t}/Abs"),
        helper.make_node("ReduceMax", [f"{t}/abs"], [f"{t}/amax"], name=f"{t}/ReduceMax", axes=[-1], keepdims=1),
        helper.make_node("Max", [f"{t}/amax", "rowq_min_amax"], [f"{t}/amax_safe"], name=f"{t}/Max"),
        helper.make_node("Mul", [f"{t}/amax_safe", "rowq_inv127"], [scale], name=f"{t}/Scale"),
        helper.make_node("Div", [x, scale], [f"{t}/scaled"], name=f"{t}/Div"),
        helper.make_node("QuantizeLinear", [f"{t}/scaled", "rowq_one", "rowq_zero_point"], [quantized], name=f"{t}/Quantize"),
    ]


def _scaled_gemm(quant: onnx.NodeProto, gemm: onnx.NodeProto, scales: onnx.NodeProto, cast: onnx.NodeProto,
                 final: onnx.NodeProto) -> list[onnx.NodeProto]:
    w_scale = scales.input[1] if scales.input[0] == quant.output[1] else scales.input[0]
    return scaled_gemm_nodes(quant.output[0], quant.output[1], gemm.input[1], w_scale, gemm.input[3],
                             final.output[0], gemm.name)


def scaled_gemm_nodes(quantized: str, row_scale: str, w: str, w_scale: str, w_zero_point: str, out: str,
                      name: str) -> list[onnx.NodeProto]:
    """The integer GEMM with the weight scales applied inside it, then the row scales: writes `out`."""
    unscaled = f"{out}_rowscaled"
    return [
        helper.make_node("MatMulIntegerToFloat", [quantized, w, "rowq_one", w_scale, "rowq_zero_point", w_zero_point],
                         [unscaled], name=f"{name}_to_float", domain="com.microsoft"),
        helper.make_node("Mul", [unscaled, row_scale], [out], name=f"{name}_row_scale"),
    ]
