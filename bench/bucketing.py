"""What length-sorted batching saves: the same texts embedded in arrival order vs sorted by length.

    python -m bench.bucketing BUNDLE [--texts 64] [--batch-size 8] [--rounds 3]

`encode_text` sorts a call's texts by token count before cutting batches, so a batch pads only to
similar lengths. Arrival order is reproduced by calling it once per batch_size texts (nothing to
sort across). Texts have 4 to 400 words, shuffled; the two orders alternate within each round.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

import edgeclip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rng = random.Random(0)
    words = "the model embeds text and images in one space for search on small devices".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 400))) for _ in range(args.texts)]
    model = edgeclip.load(args.bundle, threads=args.threads)

    def arrival() -> np.ndarray:
        return np.concatenate([model.encode_text(texts[i : i + args.batch_size], batch_size=args.batch_size)
                               for i in range(0, len(texts), args.batch_size)])

    def length_sorted() -> np.ndarray:
        return model.encode_text(texts, batch_size=args.batch_size)

    model.encode_text(texts[:2])  # warm-up
    times: dict[str, list[float]] = {"arrival order": [], "length-sorted": []}
    outputs = {}
    for _ in range(args.rounds):
        for name, call in (("arrival order", arrival), ("length-sorted", length_sorted)):
            start = time.perf_counter()
            outputs[name] = call()
            times[name].append(time.perf_counter() - start)
    a, s = statistics.median(times["arrival order"]), statistics.median(times["length-sorted"])
    agreement = float((outputs["arrival order"] * outputs["length-sorted"]).sum(axis=1).min())
    print(f"{args.texts} texts (4-400 words), batch_size {args.batch_size}, {args.threads} threads, {args.rounds} rounds: "
          f"arrival order {a:.2f} s, length-sorted {s:.2f} s, speed-up {a / s:.2f}x; min cosine between the two {agreement:.6f}")


if __name__ == "__main__":
    main()
