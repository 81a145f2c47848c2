"""Which linear layers of the text tower are sensitive to int4 weights? (feeds QuantRecipe.nodes_to_exclude)

Fake-quantizes weights in the PyTorch reference the way MatMulNBits stores them (round-to-nearest,
symmetric, block 32 along the input dim) and measures mean/min cosine to fp32 on every 5th
validation text: all linears int4; each kind of linear alone kept in float or alone int4; each
layer alone int4. Weight-only: ORT's accuracy_level 4 also rounds activations to int8.

    python bench/int4_sensitivity.py CHECKPOINT_DIR [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from tokenizers import Tokenizer
from torch import nn

from converters.checkpoint import load_reference, resolve_source
from converters.config import load_clip_config
from converters.validation_set import validation_texts


def fake_int4(weight: torch.Tensor, block: int = 32) -> torch.Tensor:
    out_dim, in_dim = weight.shape
    blocks = weight.reshape(out_dim, in_dim // block, block)
    scale = blocks.abs().amax(-1, keepdim=True) / 7
    return (torch.clamp(torch.round(blocks / scale), -8, 7) * scale).reshape(out_dim, in_dim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = resolve_source(args.checkpoint, None)
    model = load_reference(source, "text", load_clip_config(source.path("config.json")))
    tokenizer = Tokenizer.from_file(str(source.path("tokenizer.json")))
    encoded = [tokenizer.encode(t.text).ids for t in validation_texts()[::5]]
    ids = torch.ones((len(encoded), max(map(len, encoded))), dtype=torch.int64)  # <pad> = 1
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)] = torch.tensor(tokens)
    mask = (ids != 1).to(torch.int64)

    def embed() -> torch.Tensor:
        with torch.no_grad():
            return nn.functional.normalize(model(ids, mask), dim=-1)

    reference = embed()
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    original = {name: m.weight.data.clone() for name, m in linears.items()}
    quantized = {name: fake_int4(w) for name, w in original.items()}

    def measure(label: str, int4_names: set[str]) -> None:
        for name, module in linears.items():
            module.weight.data = quantized[name] if name in int4_names else original[name]
        cosines = (embed() * reference).sum(-1)
        params = sum(original[n].numel() for n in set(linears) - int4_names)
        print(f"| {label} | {cosines.mean():.4f} | {cosines.min():.4f} | {params / 1e6:.1f} |", flush=True)

    print(f"{len(encoded)} texts, {len(linears)} linears; {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| int4 weights | cosine mean | cosine min | params left float (M) |\n|---|---:|---:|---:|")
    everything = set(linears)
    measure("all linears", everything)
    kinds = sorted({name.rsplit(".", 1)[-1] for name in linears})
    for kind in kinds:
        measure(f"all but {kind} (kept float)", {n for n in everything if not n.endswith(kind)})
        measure(f"only {kind}", {n for n in everything if n.endswith(kind)})
    for layer in range(len(model.encoder.layers)):
        measure(f"only layer {layer}", {n for n in everything if f"layers.{layer}." in n})


if __name__ == "__main__":
    main()
