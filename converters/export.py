"""Export one reference tower to its own ONNX graph (fp32), following its ExportSpec."""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from .config import ClipConfig
from .fusion import fuse_attention
from .graph_data import GraphWeights, save_streamed
from .reference.attention import PLACEHOLDER_DOMAIN, unfused_export
from .specs import ExportSpec



def save_graph(model: onnx.ModelProto, out_path: Path) -> list[Path]:
    """Graph structure in `out_path`, every weight in one `<name>.data` beside it. Returns both paths.

    Always external, not only past protobuf's 2 GiB: ONNX Runtime memory-maps the data file, so
    weights it prepacks are not also held as a loaded copy. Measured on the full-size int8 graphs
    (same outputs, same speed): text peak RSS 859 -> 379 MB and load 1.83 -> 0.76 s; vision 704 -> 512
    MB and 1.42 -> 0.78 s.
    """
    data_name = out_path.name + ".data"
    onnx.save_model(model, str(out_path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)
    return [out_path, out_path.with_name(data_name)]


def sample_inputs(cfg: ClipConfig, spec: ExportSpec, image_batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Inputs to trace with. Text: batch 2 and a padded row, so no size is mistaken for a constant.

    Images: batch 1. The tracer keeps every activation of the traced forward alive until it ends, and at
    full size each image adds ~1.6 GB to the export's peak; the graph traced at batch 1 is the same,
    node for node and byte for byte, as at batch 2 (tests/converters/test_build.py checks it)."""
    if spec.tower == "text":
        input_ids = torch.tensor([[0, 5, 6, 7, 8, 9, 2], [0, 10, 11, 2, 1, 1, 1]], dtype=torch.int64)
        input_ids = input_ids.clamp(max=cfg.text.vocab_size - 1)
        return input_ids, (input_ids != cfg.text.pad_token_id).to(torch.int64)
    size = cfg.vision.image_size
    return (torch.randn(image_batch, 3, size, size, generator=torch.Generator().manual_seed(0)),)


def share_large_constants(model: onnx.ModelProto, min_bytes: int = 1024) -> int:
    """Turn large Constant nodes into initializers, one per distinct value.

    The TorchScript exporter inlines a buffer once per use: the vision tower's RoPE tables became
    96 Constant copies (~33 MB at full size). Returns how many Constant nodes were removed.
    """
    canonical: dict[tuple[tuple[int, ...], int, bytes], str] = {}
    rename: dict[str, str] = {}
    kept = []
    for node in model.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is None or len(value.raw_data) < min_bytes:
            kept.append(node)
            continue
        key = (tuple(value.dims), value.data_type, hashlib.sha256(value.raw_data).digest())
        if key not in canonical:
            canonical[key] = node.output[0]
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
        else:
            rename[node.output[0]] = canonical[key]
    removed = len(model.graph.node) - len(kept)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    return removed


def export_tower(model: nn.Module, cfg: ClipConfig, spec: ExportSpec, out_path: Path, portable: bool = False) -> list[Path]:
    """Write `out_path` and its `<name>.data` weights. Returns the files written.

    portable: standard ONNX ops only (attention and RoPE as MatMul/Softmax/Slice...), for runtimes
    other than ONNX Runtime (OpenVINO); ONNX Runtime itself runs the fused default graph faster.
    """
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".export-") as scratch:
        raw = Path(scratch) / "raw.onnx"
        # The TorchScript exporter (deprecated, still supported): seconds for the full model where
        # the dynamo exporter takes seconds per layer, and it keeps our op structure as written.
        with torch.no_grad(), warnings.catch_warnings(), unfused_export() if portable else contextlib.nullcontext():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                sample_inputs(cfg, spec),
                str(raw),
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_axes=spec.dynamic_axes(),
                opset_version=spec.opset,
                do_constant_folding=True,
                custom_opsets={PLACEHOLDER_DOMAIN: 1},
                dynamo=False,
            )
        # Structure only: the weights (torch writes one file per tensor past 2 GB) are copied one at a time,
        # so the full-size text export never holds a second 2.2 GB copy beside the torch model.
        proto = onnx.load(str(raw), load_external_data=False)
        proto.producer_name = "edgeclip.converters"
        share_large_constants(proto)
        if not portable:
            fuse_attention(proto)
        return save_streamed(GraphWeights(raw, proto), out_path)
