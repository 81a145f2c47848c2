"""Graph rewrites after export: attention placeholders -> com.microsoft.MultiHeadAttention.

The vision tower never pads, so its attention is one MultiHeadAttention node, which ONNX Runtime
runs with its CPU flash-attention kernel (no [heads, seq, seq] score tensor). That kernel refuses
a padding mask, so each text layer gets an If: an unpadded batch (every single text, every batch of
equal lengths) takes the flash kernel, a padded batch the masked kernel. The condition is computed
once per call.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .reference.attention import PLACEHOLDER_DOMAIN

MS_DOMAIN = "com.microsoft"


def _mha(name: str, inputs: list[str], output: str, num_heads: int) -> onnx.NodeProto:
    return helper.make_node("MultiHeadAttention", inputs, [output], name=name, domain=MS_DOMAIN, num_heads=num_heads)


def fuse_attention(model: onnx.ModelProto) -> int:
    """Rewrite every edgeclip::Attention node in place; returns how many were rewritten."""
    graph = model.graph
    nodes = list(graph.node)
    placeholders = [n for n in nodes if n.domain == PLACEHOLDER_DOMAIN and n.op_type == "Attention"]
    if not placeholders:
        return 0
    new_nodes: list[onnx.NodeProto] = []
    mask_flags: dict[str, tuple[str, str]] = {}  # float mask name -> (int32 mask, "no padding" flag)
    for node in nodes:
        if node not in placeholders:
            new_nodes.append(node)
            continue
        heads = next(a.i for a in node.attribute if a.name == "num_heads")
        q, k, v = node.input[:3]
        out = node.output[0]
        if len(node.input) == 3:
            new_nodes.append(_mha(node.name or out, [q, k, v], out, heads))
            continue
        mask = node.input[3]
        if mask not in mask_flags:
            mask_i32, flag = f"{mask}_int32", f"{mask}_unpadded"
            new_nodes += [
                helper.make_node("Cast", [mask], [mask_i32], name=f"{mask_i32}_cast", to=TensorProto.INT32),
                helper.make_node("ReduceMin", [mask_i32], [f"{flag}_min"], name=f"{flag}_min", keepdims=0),
                helper.make_node("Constant", [], [f"{flag}_one"], name=f"{flag}_one",
                                 value=helper.make_tensor(f"{flag}_one", TensorProto.INT32, [], [1])),
                helper.make_node("Equal", [f"{flag}_min", f"{flag}_one"], [flag], name=flag),
            ]
            mask_flags[mask] = (mask_i32, flag)
        mask_i32, flag = mask_flags[mask]
        branch_out = lambda tag: helper.make_tensor_value_info(f"{out}_{tag}", TensorProto.FLOAT, None)  # noqa: E731
        flash = helper.make_graph([_mha(f"{out}_flash", [q, k, v], f"{out}_flash", heads)], f"{out}_flash_branch", [],
                                  [branch_out("flash")])
        masked = helper.make_graph([_mha(f"{out}_masked", [q, k, v, "", mask_i32], f"{out}_masked", heads)],
                                   f"{out}_masked_branch", [], [branch_out("masked")])
        new_nodes.append(helper.make_node("If", [flag], [out], name=f"{out}_select", then_branch=flash, else_branch=masked))
    del graph.node[:]
    graph.node.extend(new_nodes)
    imports = [o for o in model.opset_import if o.domain != PLACEHOLDER_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(imports)
    if not any(o.domain == MS_DOMAIN for o in imports):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(placeholders)
