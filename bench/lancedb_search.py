"""`edgeclip search` against LanceDB on the same vectors, in one run: p50/p95 latency and recall@10.

    python -m bench.lancedb_search [--rows 100000] [--dim 1024] [--queries 50] [--work /tmp/edgeclip-lance]

The vectors are synthetic unit rows with neighbours (1,000 clusters; queries are perturbed stored rows), put
into an edgeclip index (float16, as `edgeclip index` stores them) and exported with `edgeclip export --to
lancedb`, so both stores hold the same rows. Timed per query, engines alternating: edgeclip's searcher
(sign-bit pass + rescoring, the default; and exact), LanceDB's flat scan, and LanceDB with an IVF_PQ index.
Only the search is timed: a text query's embedding costs the same in both. Recall is against exact search
over the float16 rows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeclip._files import atomic_write_bytes
from edgeclip.cli.common import positive
from edgeclip.index.export import export_index
from edgeclip.index.search import Searcher
from edgeclip.index.store import IndexSettings, Row, Store
from edgeclip.machine import machine_tags


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def make_index(path: Path, rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centers = unit(rng.standard_normal((1000, dim)))
    vectors = unit(centers[rng.integers(0, 1000, rows)] + 0.6 * rng.standard_normal((rows, dim)) / np.sqrt(dim) * 4)
    store = Store(path, create=IndexSettings("synthetic", "synthetic", {}, dim, "float16"))
    for start in range(0, rows, 5000):
        store.put([Row(f"r{i}", "image", f"/synthetic/{i}.jpg", "fp", "h", "", vectors[i]) for i in range(start, min(rows, start + 5000))])
    store.close()
    return vectors.astype(np.float16).astype(np.float32)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=positive, default=100_000)
    parser.add_argument("--dim", type=positive, default=1024)
    parser.add_argument("--queries", type=positive, default=50)
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeclip-lance"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if args.rows < 1000 or args.dim % 16:
        parser.error("--rows must be at least 1000 (IVF_PQ trains 256 lists) and --dim a multiple of 16 (its sub-vectors)")
    import lancedb
    from lancedb.index import IvfPq

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    stored = make_index(args.work / "index.db", args.rows, args.dim, rng)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    export_index(args.work / "index.db", "lancedb", args.work / "lance")
    export_s = time.perf_counter() - started
    flat = lancedb.connect(args.work / "lance").open_table("items")
    shutil.copytree(args.work / "lance", args.work / "lance-ivf")
    ivf = lancedb.connect(args.work / "lance-ivf").open_table("items")
    started = time.perf_counter()
    ivf.create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=256, num_sub_vectors=args.dim // 16))
    ivf_build_s = time.perf_counter() - started
    searcher = Searcher(Store(args.work / "index.db", readonly=True))
    ids = np.array([f"r{i}" for i in range(args.rows)])
    queries = unit(stored[rng.integers(0, args.rows, args.queries)] + 0.5 * rng.standard_normal((args.queries, args.dim)) / np.sqrt(args.dim))
    truth = [set(ids[np.argsort(-(stored @ q))[:10]]) for q in queries]

    def edgeclip_run(exact: bool) -> Callable[[np.ndarray], list[str]]:
        return lambda q: [f"r{h.rowid - 1}" for h in searcher.search(q, 10, exact=exact)]

    def lance_run(table: Any, nprobes: int | None = None) -> Callable[[np.ndarray], list[str]]:
        def run(q: np.ndarray) -> list[str]:
            query = table.search(q).metric("cosine").limit(10).select(["id", "_distance"])
            if nprobes:
                query = query.nprobes(nprobes).refine_factor(10)
            return query.to_arrow().column("id").to_pylist()
        return run

    engines = {"edgeclip search (sign bits + rescoring, default)": edgeclip_run(False),
               "edgeclip search --exact": edgeclip_run(True),
               "LanceDB flat scan": lance_run(flat),
               "LanceDB IVF_PQ (256 lists, nprobes 20, refine 10)": lance_run(ivf, 20)}
    for run in engines.values():  # warm: caches, the sign bits in memory
        run(queries[0])
    times: dict[str, list[float]] = {name: [] for name in engines}
    recall: dict[str, list[float]] = {name: [] for name in engines}
    for q, want in zip(queries, truth):
        for name, run in engines.items():
            start = time.perf_counter()
            got = run(q)
            times[name].append(time.perf_counter() - start)
            recall[name].append(len(want & set(got)) / 10)
    result = {"machine": machine_tags(), "date": time.strftime("%Y-%m-%d %H:%M"), "rows": args.rows, "dim": args.dim,
              "queries": args.queries, "index_build_s": build_s, "export_to_lancedb_s": export_s, "ivf_pq_build_s": ivf_build_s,
              "engines": {name: {"p50_ms": statistics.median(t) * 1e3, "p95_ms": percentile(t, 95) * 1e3,
                                 "recall_at_10": float(np.mean(recall[name]))} for name, t in times.items()}}
    print(f"{args.rows} rows x {args.dim} dims (float16 in the index), {args.queries} queries; export {export_s:.1f} s, "
          f"IVF_PQ build {ivf_build_s:.1f} s")
    for name, r in result["engines"].items():
        print(f"{name:<52} p50 {r['p50_ms']:8.1f} ms  p95 {r['p95_ms']:8.1f} ms  recall@10 {r['recall_at_10']:.3f}")
    stamp = time.strftime("%Y-%m-%d-%H%M")
    atomic_write_bytes(args.out / f"lancedb-search-{stamp}.json", json.dumps(result, indent=1).encode())


if __name__ == "__main__":
    main()
