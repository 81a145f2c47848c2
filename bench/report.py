"""FLOP model, efficiency against the measured ceilings, the issue's targets, and the JSON/Markdown/PNG files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeclip._files import atomic_write_bytes

LAYERS, WIDTH = 24, 1024
# Linear-layer parameters per tower (spec §2): text Wqkv, out_proj, fc1, fc2; vision qkv, proj, SwiGLU
# w1/w2/w3 (2730 wide), plus the 14x14 patch embedding. Embedding lookups cost no FLOPs.
TEXT_LINEAR_PARAMS = LAYERS * (WIDTH * 3 * WIDTH + WIDTH * WIDTH + 2 * WIDTH * 4096)
VISION_LINEAR_PARAMS = LAYERS * (WIDTH * 3 * WIDTH + WIDTH * WIDTH + 3 * WIDTH * 2730) + 3 * 14 * 14 * WIDTH
VISION_TOKENS = 1 + (512 // 14) ** 2  # CLS + 36 x 36 patches
CEILING_ROWS = (16, 128, 512, 1297)
SHORT_QUERY_ENGINES = ("edgeclip-int8", "edgeclip-int4", "plain-int8", "edgeclip-fp32", "pytorch-fp32")


def flops(tower: str, batch: int, tokens: int | None) -> tuple[float, float]:
    """(linear FLOPs, attention FLOPs) of one call: 2 per multiply-add; attention is QK^T and AV."""
    seq = tokens if tower == "text" else VISION_TOKENS
    params = TEXT_LINEAR_PARAMS if tower == "text" else VISION_LINEAR_PARAMS
    return 2.0 * batch * seq * params, 4.0 * batch * LAYERS * seq * seq * WIDTH


def ceiling(ceilings: dict[str, Any], threads: int, kind: str, rows: int) -> float:
    """GFLOP/s of the measured ceiling whose row count is nearest to `rows`."""
    nearest = min(CEILING_ROWS, key=lambda r: abs(r - rows))
    return ceilings[f"threads={threads}"][f"{kind}_gflops@{nearest}"]


def floor_seconds(ceilings: dict[str, Any], tower: str, tokens: int | None, threads: int = 2) -> float:
    """Batch-1 floor: linear FLOPs at the int8 GEMM ceiling plus attention FLOPs at the fp32 ceiling."""
    linear, attention = flops(tower, 1, tokens)
    rows = tokens or VISION_TOKENS
    return linear / 1e9 / ceiling(ceilings, threads, "int8", rows) + attention / 1e9 / ceiling(ceilings, threads, "fp32", rows)


def rows_of(runs: list[dict[str, Any]], ceilings: dict[str, Any]) -> list[dict[str, Any]]:
    table = []
    for run in runs:
        if "error" in run:
            table.append({"engine": _label(run), "tower": run["tower"], "threads": run["threads"], "error": run["error"]})
            continue
        for case in run["cases"]:
            linear, attention = flops(run["tower"], case["batch"], case.get("tokens"))
            achieved = (linear + attention) / case["p50_s"] / 1e9
            kind = "int8" if run.get("variant") == "int8" or run.get("label") == "plain-int8" else "fp32"
            rows = case["batch"] * (case.get("tokens") or VISION_TOKENS)
            table.append({
                "engine": _label(run), "tower": run["tower"], "threads": run["threads"], "batch": case["batch"],
                "tokens": case.get("tokens"), "p50_s": case["p50_s"], "p95_s": case["p95_s"], "reps": case["reps"],
                "items_per_s": case["items_per_s"], "gflops": achieved,
                "efficiency": achieved / ceiling(ceilings, run["threads"], kind, rows), "ceiling_kind": kind,
                "cold_start_s": run["cold_start_s"], "load_s": run.get("load_s"),
                "first_call_s": run.get("first_call_s"), "peak_rss_mb": case["peak_rss_mb_so_far"],
            })
    return table


def _label(run: dict[str, Any]) -> str:
    return f"edgeclip-{run['variant']}" if run["engine"] == "edgeclip" else run["label"]


def _find(table: list[dict[str, Any]], engine: str, tower: str, threads: int, batch: int, tokens: int | None) -> dict[str, Any] | None:
    return next((r for r in table if r["engine"] == engine and r["tower"] == tower and r["threads"] == threads
                 and r.get("batch") == batch and r.get("tokens") == tokens and "error" not in r), None)


def targets(table: list[dict[str, Any]], ceilings: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets at 2 threads, batch 1: measured value, target, verdict."""
    out = []

    def add(name: str, value: float | None, goal: float, higher_is_better: bool, unit: str) -> None:
        ok = value is not None and (value >= goal if higher_is_better else value <= goal)
        out.append({"target": name, "measured": value, "goal": goal, "unit": unit, "met": ok, "higher_is_better": higher_is_better})

    image = _find(table, "edgeclip-int8", "vision", 2, 1, None)
    if image:
        floor = floor_seconds(ceilings, "vision", None)
        add("image int8 latency / floor", image["p50_s"] / floor, 1.33, False, "x")
        for other, goal in (("pytorch-fp32", 2.5), ("plain-fp32", 1.3), ("plain-int8", 1.3)):
            ref = _find(table, other, "vision", 2, 1, None)
            add(f"image int8 speed-up vs {other}", ref["p50_s"] / image["p50_s"] if ref else None, goal, True, "x")
        plain = _find(table, "plain-int8", "vision", 2, 1, None)
        if plain:  # no graph can run under the floor, so this bounds any speed-up over plain-int8
            add("image: plain-int8 latency / floor (largest possible speed-up over it)", plain["p50_s"] / floor, 1.3, True, "x")
    figures = ceilings["threads=2"]
    short = _find(table, "edgeclip-int8", "text", 2, 1, 16)
    if short:
        add("text 16 tokens int8 efficiency vs int8 ceiling@16 (weights in cache)", short["gflops"] / ceiling(ceilings, 2, "int8", 16), 0.70, True, "")
        if "int8_gflops@16_streamed" in figures:
            add("text 16 tokens int8 efficiency vs int8 ceiling@16 (weights streamed, as the tower's are)",
                short["gflops"] / figures["int8_gflops@16_streamed"], 0.70, True, "")
    long_doc = _find(table, "edgeclip-int8", "text", 2, 1, 512)
    if long_doc:
        add("text 512 tokens int8 efficiency vs int8 ceiling@512", long_doc["gflops"] / ceiling(ceilings, 2, "int8", 512), 0.70, True, "")
        add("text 512 tokens int8 floor / latency (attention at the fp32 ceiling, as for images)",
            floor_seconds(ceilings, "text", 512) / long_doc["p50_s"], 0.70, True, "")
    torch_short = _find(table, "pytorch-fp32", "text", 2, 1, 16)
    if short and torch_short:
        add("text 16 tokens int8 speed-up vs pytorch-fp32", torch_short["p50_s"] / short["p50_s"], 5.0, True, "x")
    long = _find(table, "edgeclip-int8", "text", 2, 1, 8192)
    if long:
        add("8192-token text peak RSS", long["peak_rss_mb"], 4096, False, "MB")
    for tower, goal in (("text", 700), ("vision", 500)):
        rows = [r for r in table if r["engine"] == "edgeclip-int8" and r["tower"] == tower and r["threads"] == 2
                and r.get("batch") == 1 and r.get("tokens") != 8192 and "error" not in r]
        if rows:
            add(f"{tower}-only int8 process peak RSS (batch 1, every length)", max(r["peak_rss_mb"] for r in rows), goal, False, "MB")
            add(f"{tower} int8 cold start (load + first call)", rows[0]["cold_start_s"], 2.0, False, "s")
            if rows[0]["load_s"] is not None:
                add(f"{tower} int8 session load alone", rows[0]["load_s"], 2.0, False, "s")
    return out


def markdown(results: dict[str, Any], table: list[dict[str, Any]], goals: list[dict[str, Any]]) -> str:
    m = results["machine"]
    isa = ", ".join(flag for flag, present in m["isa"].items() if present)
    lines = [f"# Benchmark {m['date']}", "", f"- CPU: {m['cpu']} ({m['cores']} logical cores; {isa})",
             f"- onnxruntime {m['onnxruntime']}, Python {m['python']}; bundle manifest sha256 {m['bundle_manifest_sha256'][:16]}…",
             f"- command: `{results['command']}`", "", "## Targets (2 threads, batch 1)", "",
             "| target | measured | goal | met |", "|---|---:|---:|---|"]
    for g in goals:
        value = "n/a" if g["measured"] is None else f"{g['measured']:.4g} {g['unit']}"
        lines.append(f"| {g['target']} | {value} | {'≥' if g['higher_is_better'] else '≤'} {g['goal']} {g['unit']} | {'yes' if g['met'] else 'NO'} |")
    lines += ["", "## Ceilings measured in this run (GFLOP/s; GOP/s for int8; GB/s streaming)", "",
              "| threads | " + " | ".join(results["ceilings"]["threads=1"]) + " |",
              "|---|" + "---:|" * len(results["ceilings"]["threads=1"])]
    for threads, figures in results["ceilings"].items():
        lines.append(f"| {threads.split('=')[1]} | " + " | ".join(f"{v:.1f}" for v in figures.values()) + " |")
    lines += ["", "## Short queries (2 threads, batch 1, p50 ms): int4 beside int8", "",
              "| tokens | " + " | ".join(SHORT_QUERY_ENGINES) + " |", "|---:|" + "---:|" * len(SHORT_QUERY_ENGINES)]
    for tokens in (1, 16):
        cells = [_find(table, e, "text", 2, 1, tokens) for e in SHORT_QUERY_ENGINES]
        lines.append(f"| {tokens} | " + " | ".join(f"{c['p50_s'] * 1e3:.1f}" if c else "n/a" for c in cells) + " |")
    lines += ["", "## Fidelity: cosine to the PyTorch fp32 reference, min / mean (8 random texts of 24 tokens, 3 random images)", ""]
    for tower, info in results["baseline"].items():
        means = info.get("mean_cosine_to_reference", {})
        lines.append(f"- {tower}: " + ", ".join(f"{k} {v:.5f}" + (f" / {means[k]:.5f}" if k in means else "")
                                               for k, v in info["min_cosine_to_reference"].items()))
    lines += ["", "## Sizes (bytes)", ""]
    lines += [f"- {k}: {v:,}" for k, v in results["bundle_sizes"].items()]
    lines += [f"- {tower}/{k}: {v:,}" for tower, info in results["baseline"].items() for k, v in info["sizes"].items()]
    lines += ["", "## Every measurement", "",
              "| tower | engine | threads | batch | tokens | p50 s | p95 s | reps | items/s | GFLOP/s | efficiency | load s | cold start s | peak RSS MB |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        if "error" in r:
            lines.append(f"| {r['tower']} | {r['engine']} | {r['threads']} | | | error: {r['error']} | | | | | | | | |")
            continue
        lines.append(f"| {r['tower']} | {r['engine']} | {r['threads']} | {r['batch']} | {r['tokens'] or ''} | {r['p50_s']:.4f} | "
                     f"{r['p95_s']:.4f} | {r['reps']} | {r['items_per_s']:.2f} | {r['gflops']:.1f} | {r['efficiency']:.2f} ({r['ceiling_kind']}) | "
                     f"{r['load_s'] if r['load_s'] is not None else float('nan'):.2f} | {r['cold_start_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", "Efficiency = (linear + attention FLOPs) / p50 ÷ the ceiling of the same kind (int8 for int8 graphs, "
              "fp32 otherwise) at the nearest measured row count. Random weights: speed only, never quality."]
    return "\n".join(lines) + "\n"


def plot(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = [("text", 1, 16), ("text", 1, 128), ("text", 1, 512), ("vision", 1, None)]
    engines = sorted({r["engine"] for r in table if "error" not in r})
    fig, axes = plt.subplots(1, len(shapes), figsize=(4 * len(shapes), 4))
    for ax, (tower, batch, tokens) in zip(axes, shapes):
        values = [(_find(table, e, tower, 2, batch, tokens) or {}).get("p50_s", 0.0) for e in engines]
        ax.barh(engines, values)
        ax.set_title(f"{tower} {'%d tok' % tokens if tokens else '512 px'}, batch 1, 2 threads", fontsize=9)
        ax.set_xlabel("p50 latency (s)")
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    tmp.replace(path)


def write_reports(results: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = rows_of(results["runs"], results["ceilings"])
    goals = targets(table, results["ceilings"])
    results = {**results, "table": table, "targets": goals}
    stem = out_dir / f"bench-{results['machine']['date'].replace(' ', '-').replace(':', '')}"
    atomic_write_bytes(stem.with_suffix(".json"), json.dumps(results, indent=1).encode())
    atomic_write_bytes(stem.with_suffix(".md"), markdown(results, table, goals).encode())
    plot(table, stem.with_suffix(".png"))
    print(stem.with_suffix(".md").read_text())
    return stem


def save_json_and_markdown(stem: Path, results: dict[str, Any], text: str) -> None:
    """STEM.json (the results) and STEM.md (their report), then the report on stdout."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    stem.with_suffix(".md").write_text(text)
    print(text)
