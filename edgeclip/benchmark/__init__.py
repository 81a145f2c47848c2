"""`edgeclip bench`: latency and throughput of a bundle on this machine, comparable across machines.

    report = run_benchmark("bundle", towers=["text"], batches=[1], tokens=[16, 512], seconds=5)
    print(format_report(report)); print("\\n".join(compare_lines(report, [load_report("h100.json")])))

A report (schema "edgeclip-bench/1"; `python -m bench.gpu_reference` writes the same) is
    {"schema", "command", "date", "machine": {cpu, cpu_class, isa, arch, cores, onnxruntime, providers_available, gpu, ...},
     "bundle": {"path", "model", "manifest_sha256"}, "settings": {threads, seconds, min_reps},
     "sessions": [{"tower", "variant", "provider", "providers_in_use", "load_s", "first_call_s", "peak_rss_mb"}],
     "rows": [{"tower", "variant", "provider", "batch", "tokens" | "image_size", "reps", "p50_s", "p95_s", "items_per_s"}]}
Each session runs in a fresh process (measure.py), so its load time and peak RSS are its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..bundle import MANIFEST_FILE, Bundle, Tower, sha256_file
from ..errors import InputError
from .measure import SCHEMA, run_session, time_calls

__all__ = ["SCHEMA", "compare_lines", "format_report", "load_report", "run_benchmark", "time_calls"]


def _variants_for(bundle: Bundle, tower: Tower, variants: Sequence[str] | None, provider: str) -> list[str]:
    available = bundle.tower(tower).variants
    if not variants:  # what the runtime would pick here
        from ..model import EdgeClip

        return [EdgeClip(bundle, providers=[provider]).variant_name(tower)]
    if list(variants) == ["all"]:
        return sorted(available)
    missing = [v for v in variants if v not in available]
    if missing:
        raise InputError(f"the {tower} tower has no variant {', '.join(missing)}; it has {', '.join(sorted(available))}")
    return list(variants)


def run_benchmark(bundle_dir: str | Path, *, towers: Sequence[Tower] | None = None, variants: Sequence[str] | None = None,
                  providers: Sequence[str] | None = None, threads: int | None = None, batches: Sequence[int] = (1,),
                  tokens: Sequence[int] = (16, 512), seconds: float = 5.0, min_reps: int = 3, command: str = "",
                  progress: Any = None) -> dict[str, Any]:
    """Every tower x variant x provider, each in its own process; see the module docstring for the report."""
    from ..machine import machine_tags
    from ..session import check_providers

    bundle = Bundle.open(bundle_dir)
    towers = list(towers or [t for t in ("text", "vision") if getattr(bundle.manifest, t) is not None])
    for tower in towers:
        bundle.tower(tower)  # raises, naming the towers it has, if absent
    if "text" in towers:
        limit = bundle.manifest.text.max_length  # type: ignore[union-attr]
        too_long = [t for t in tokens if not 2 <= t <= limit]
        if too_long:
            raise InputError(f"--tokens {too_long} out of range: 2 to {limit} for this bundle's text tower")
    providers = check_providers(providers)
    jobs = [{"bundle": str(bundle_dir), "tower": tower, "variant": variant, "provider": provider, "threads": threads,
             "batches": list(batches), "tokens": list(tokens), "seconds": seconds, "min_reps": min_reps}
            for tower in towers for provider in providers for variant in _variants_for(bundle, tower, variants, provider)]
    report: dict[str, Any] = {
        "schema": SCHEMA, "command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_tags(),
        "bundle": {"path": str(bundle_dir), "model": bundle.manifest.source.model_id,
                   "random_weights": bundle.manifest.source.random_weights,
                   "manifest_sha256": sha256_file(Path(bundle_dir) / MANIFEST_FILE)},
        "settings": {"threads": threads, "seconds": seconds, "min_reps": min_reps}, "sessions": [], "rows": [],
    }
    for job in jobs:
        if progress:
            progress(f"{job['tower']} {job['variant']} on {job['provider']} ...")
        measured = run_session(job)
        report["sessions"].append(measured["session"])
        report["rows"].extend(measured["rows"])
    return report


def load_report(path: str | Path) -> dict[str, Any]:
    try:
        report = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (give a JSON that `edgeclip bench --json` wrote)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable as JSON ({exc})") from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA or not isinstance(report.get("rows"), list):
        raise InputError(f"{path}: not an edgeclip bench report (expected schema {SCHEMA!r}, as `edgeclip bench --json` "
                         "and `python -m bench.gpu_reference` write)")
    return report


def _shape(row: dict[str, Any]) -> tuple[str, int, int | None]:
    return row["tower"], int(row["batch"]), row.get("tokens")


def _shape_label(shape: tuple[str, int, int | None], image_size: int | None = None, with_tower: bool = True) -> str:
    tower, batch, tokens = shape
    size = f"{tokens} tok" if tokens is not None else (f"{image_size} px" if image_size else "image")
    return f"{tower + ' ' if with_tower else ''}b{batch} {size}"


def _ms(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"


def machine_label(report: dict[str, Any]) -> str:
    m = report.get("machine", {})
    where = m.get("gpu") if any("cuda" in str(r.get("provider", "")).lower() for r in report["rows"]) and m.get("gpu") else m.get("cpu")
    return f"{where} ({m.get('cpu_class', '?')}, {m.get('cores', '?')} cores)" if where == m.get("cpu") else str(where)


def format_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"{m['cpu']}: class {m['cpu_class']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}"
             + (f", GPU {m['gpu']}" if m.get("gpu") else ""),
             f"bundle {report['bundle']['path']} (manifest sha256 {report['bundle']['manifest_sha256'][:12]}), "
             f"threads {report['settings']['threads'] or 'default'}", ""]
    for s in report["sessions"]:
        if "error" in s:
            lines.append(f"{s['tower']:<6} {s['variant']:<10} {s['provider']}: FAILED: {s['error']}")
        else:
            lines.append(f"{s['tower']:<6} {s['variant']:<10} {s['provider']}: load {s['load_s']:.2f} s, "
                         f"peak RSS {s['peak_rss_mb']:.0f} MB")
    lines += ["", f"{'tower':<6} {'variant':<10} {'shape':<12} {'p50':>10} {'p95':>10} {'items/s':>9} {'reps':>5}"]
    for r in report["rows"]:
        shape = _shape_label(_shape(r), r.get("image_size"), with_tower=False)
        lines.append(f"{r['tower']:<6} {r['variant']:<10} {shape:<12} {_ms(r['p50_s']):>10} {_ms(r['p95_s']):>10} "
                     f"{r['items_per_s']:>9.1f} {r['reps']:>5}")
    return "\n".join(lines)


def compare_lines(here: dict[str, Any], others: Sequence[dict[str, Any]]) -> list[str]:
    """Each shape measured here beside the fastest row of the same shape in every other report.

    Ratio = other p50 / this p50: below 1 the other machine is faster, above 1 this one is.
    """
    lines = ["compared runs (ratio = their p50 / this p50; < 1: theirs is faster):"]
    lines += [f"  [{i + 1}] {machine_label(o)}, {o.get('date', '?')}" for i, o in enumerate(others)]
    best_here: dict[tuple[str, int, int | None], dict[str, Any]] = {}
    for row in here["rows"]:
        key = _shape(row)
        if key not in best_here or row["p50_s"] < best_here[key]["p50_s"]:
            best_here[key] = row
    for key, row in best_here.items():
        cells = [f"{_shape_label(key, row.get('image_size')):<16} here {row['variant']} {_ms(row['p50_s'])}"]
        for i, other in enumerate(others):
            same = [r for r in other["rows"] if _shape(r) == key]
            if not same:
                cells.append(f"[{i + 1}] -")
                continue
            best = min(same, key=lambda r: r["p50_s"])
            cells.append(f"[{i + 1}] {best['variant']} {_ms(best['p50_s'])} = {best['p50_s'] / row['p50_s']:.2f}x")
        lines.append("  " + " | ".join(cells))
    return lines
