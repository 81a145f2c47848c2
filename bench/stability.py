"""Thread safety, determinism and memory growth of one EdgeClip shared by several threads.

    python -m bench.stability BUNDLE [--variant int8] [--threads 4] [--calls 300]

Prints: whether every threaded result equals the sequential one bit for bit, and RSS before/after
many repeated calls (after a warm-up, so allocator pools have settled).
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import psutil

import edgeclip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--variant")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    model = edgeclip.load(args.bundle, variant=args.variant)
    texts = [[f"query {t} {i}: a photo of a red bicycle" for i in range(4)] for t in range(args.threads)]
    images = [np.random.default_rng(t).integers(0, 256, (96 + t, 128, 3), dtype=np.uint8) for t in range(args.threads)]
    expected = [(model.encode_text(t), model.encode_image(im)) for t, im in zip(texts, images)]
    mismatches, errors = [], []

    def work(index: int) -> None:
        try:
            for _ in range(5):
                got = (model.encode_text(texts[index]), model.encode_image(images[index]))
                if not all(np.array_equal(a, b) for a, b in zip(got, expected[index])):
                    mismatches.append(index)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    start = time.perf_counter()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(args.threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(f"{args.threads} threads x 5 rounds of encode_text + encode_image in {time.perf_counter() - start:.1f} s: "
          f"{len(mismatches)} results differ from sequential, {len(errors)} errors {errors[:2]}")
    process = psutil.Process()
    for _ in range(20):
        model.encode_text(texts[0])
        model.encode_image(images[0])
    before = process.memory_info().rss
    for _ in range(args.calls):
        assert np.array_equal(model.encode_text(texts[0]), expected[0][0])
        assert np.array_equal(model.encode_image(images[0]), expected[0][1])
    after = process.memory_info().rss
    print(f"{args.calls} more calls of each (all bit-identical): RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MB "
          f"({(after - before) / 2**20:+.1f} MB)")


if __name__ == "__main__":
    main()
