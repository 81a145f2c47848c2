"""The search index at 10k, 100k and 1M items, and indexing speed against the model's own (issue 14).

    python -m bench.index [--sizes 10000,100000,1000000] [--dim 1024] [--bundle B --images 16]

The store is measured on synthetic clustered unit vectors (no model: the store's speed and recall do
not depend on what the vectors mean): 2,000 cluster centres, items and queries scattered around them.
Per size: file size, the searcher's RAM (RSS before/after loading its sign bits), search p50/p95 of
the default (sign-bit pass + rescoring) and of --exact, and recall@10 of the default against exact
float32 scores. With --bundle, `Index.add` on a folder of images vs `encode_image` on the same files.
Writes bench/results/index-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import save_json_and_markdown
from edgeclip.index.search import Searcher
from edgeclip.index.store import IndexSettings, Row, Store


def rss_mb() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024  # type: ignore[union-attr]


def clustered(n: int, dim: int, centres: np.ndarray, rng: np.random.Generator, spread: float = 0.6) -> np.ndarray:
    picks = centres[rng.integers(0, len(centres), n)]
    rows = picks + spread * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def build(path: Path, n: int, dim: int, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Write n items in batches of 10,000; returns their float32 vectors (for the exact reference)."""
    store = Store(path, create=IndexSettings("synthetic", "synthetic", {}, dim, "float16"))
    vectors = np.empty((n, dim), np.float32)
    for start in range(0, n, 10_000):
        batch = clustered(min(10_000, n - start), dim, centres, rng)
        vectors[start:start + len(batch)] = batch
        store.put([Row(f"item{start + i}", "image", f"/photos/{start + i}.jpg", "fp", "h", "", v) for i, v in enumerate(batch)])
    store.close()
    return vectors


def measure_size(n: int, dim: int, queries: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        started = time.perf_counter()
        vectors = build(path, n, dim, centres, rng)
        build_s = time.perf_counter() - started
        stored = vectors.astype(np.float16).astype(np.float32)  # what the index holds
        del vectors
        store = Store(path)
        searcher = Searcher(store)
        before = rss_mb()
        searcher._refresh()  # loads the sign bits, as the first search does
        searcher_mb = rss_mb() - before
        qs = clustered(queries, dim, centres, rng)
        times: dict[str, list[float]] = {"default": [], "exact": []}
        recalls = []
        for i, q in enumerate(qs):
            started = time.perf_counter()
            hits = searcher.search(q, 10)
            times["default"].append(time.perf_counter() - started)
            if i < 5 or n <= 100_000:  # --exact reads every vector from the file: a few at 1M
                started = time.perf_counter()
                searcher.search(q, 10, exact=True)
                times["exact"].append(time.perf_counter() - started)
            truth = set(np.argpartition(-(stored @ q), 10)[:10] + 1)  # rowids start at 1, in insertion order
            recalls.append(len(truth & {h.rowid for h in hits}) / 10)
        store.close()
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    ms = {k: [t * 1e3 for t in v] for k, v in times.items()}
    return {"items": n, "dim": dim, "precision": "float16", "build_s": round(build_s, 1), "file_mb": round(size / 2**20, 1),
            "searcher_ram_mb": round(searcher_mb, 1), "process_rss_mb": round(rss_mb(), 1),
            "default_p50_ms": round(statistics.median(ms["default"]), 2),
            "default_p95_ms": round(float(np.percentile(ms["default"], 95)), 2),
            "exact_p50_ms": round(statistics.median(ms["exact"]), 1), "exact_p95_ms": round(float(np.percentile(ms["exact"], 95)), 1),
            "exact_queries": len(ms["exact"]), "recall_at_10": round(float(np.mean(recalls)), 4), "queries": queries}


def indexing_speed(bundle: Path, count: int, threads: int) -> dict[str, Any]:
    import edgeclip
    from bench.serve import photo
    from edgeclip.index import Index

    model = edgeclip.load(bundle, threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        paths = []
        for i in range(count):
            paths.append(folder / f"{i:03d}.jpg")
            paths[-1].write_bytes(photo(800, 600, i))
        model.encode_image([str(paths[0])])  # warm
        started = time.perf_counter()
        model.encode_image([str(p) for p in paths], batch_size=4)
        direct = count / (time.perf_counter() - started)
        with Index(Path(tmp) / "photos.db", model) as index:
            started = time.perf_counter()
            report = index.add([folder])
            indexed = count / (time.perf_counter() - started)
        assert report.added == count
    return {"images": count, "encode_image_per_s": round(direct, 3), "index_add_per_s": round(indexed, 3),
            "ratio": round(indexed / direct, 3)}


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# search index ({results['machine']['date']})", "", f"`{results['command']}`", "",
             "Store measured on synthetic clustered unit vectors (no model); default = sign-bit pass over every item, "
             "then the best 400 rescored with their stored float16 vectors (under 64 MB of vectors: exact, in memory). "
             "Searcher RAM is the RSS rise when the sign bits load (unreliable below ~50 MB: freed memory is reused; "
             "the bits are N x dim/8 bytes).", "",
             "| items | file MB | searcher RAM MB | default p50 / p95 ms | --exact p50 / p95 ms | recall@10 |",
             "|---|---|---|---|---|---|"]
    for r in results["sizes"]:
        lines.append(f"| {r['items']:,} | {r['file_mb']} | {r['searcher_ram_mb']} | {r['default_p50_ms']} / {r['default_p95_ms']} | "
                     f"{r['exact_p50_ms']} / {r['exact_p95_ms']} (n={r['exact_queries']}) | {r['recall_at_10']} |")
    if "indexing" in results:
        i = results["indexing"]
        lines += ["", f"Indexing {i['images']} images: `Index.add` {i['index_add_per_s']}/s vs `encode_image` "
                      f"{i['encode_image_per_s']}/s = **{i['ratio']}x**"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    from bench.run import machine_tag

    results: dict[str, Any] = {"machine": machine_tag(args.bundle) if args.bundle else {"date": time.strftime("%Y-%m-%d %H:%M")},
                               "command": "python -m bench.index " + " ".join(sys.argv[1:]), "sizes": []}
    for n in (int(s) for s in args.sizes.split(",")):
        print(f"{n:,} items ...", file=sys.stderr, flush=True)
        results["sizes"].append(measure_size(n, args.dim, args.queries))
        print(results["sizes"][-1], file=sys.stderr, flush=True)
    if args.bundle:
        print("indexing speed ...", file=sys.stderr, flush=True)
        results["indexing"] = indexing_speed(args.bundle, args.images, args.threads)
    save_json_and_markdown(args.out / f"index-{time.strftime('%Y-%m-%d-%H%M')}", results, markdown(results))


if __name__ == "__main__":
    main()
