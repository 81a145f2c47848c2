"""Embed fixed texts and images with every variant of a bundle, or compare such runs (the ARM64 check).

    python variant_rows.py embed BUNDLE OUT.npz     # rows per variant x tower, plus the CPU class seen
    python variant_rows.py compare REF.npz RUN.npz ...   # cosine of each run's rows to REF's; exit 1 below the line

Needs only the installed edgeclip wheel (numpy, no torch, no checkout): it runs inside the arm64 root
filesystem under qemu-user. No timings: speed under emulation means nothing.
"""

from __future__ import annotations

import json
import platform
import sys
import warnings

import numpy as np

TEXTS = ["a seal resting on a rock", "eine Robbe liegt auf einem Felsen", "une photo d'un chat", "岩の上のアザラシ",
         "тюлень на камне", "", "foca en una roca " * 40]
MIN_COSINE = 0.9999
# int4 (MatMulNBits, accuracy_level 4) quantizes activations per block inside the kernel, and ARM's i8mm/SVE
# kernels round differently from x86's: measured 0.99985 on qemu's `max` CPU (0.99992 on a Cortex-A72), two
# orders of magnitude inside the variant's own distance from fp32. Every other variant is held to MIN_COSINE.
MIN_COSINE_INT4 = 0.9995


def images() -> list[np.ndarray]:
    """Deterministic photo-like arrays of several shapes (preprocessing resizes and crops them)."""
    out = []
    for seed, (height, width) in enumerate([(512, 512), (300, 640), (700, 420), (64, 48)]):
        ramp = np.add.outer(np.arange(height), np.arange(width))[..., None] * np.array([1, 2, 3]) + seed * 37
        noise = np.random.default_rng(seed).integers(0, 24, (height, width, 3))
        out.append(((ramp + noise) % 256).astype(np.uint8))
    return out


def embed(bundle: str, out: str) -> None:
    import edgeclip
    from edgeclip.machine import FULL_RANGE_INT8, cpu_class, cpu_flags, saturates_full_range_int8

    warnings.simplefilter("ignore")  # fp16 on a CPU warns; every variant runs here on purpose
    bundle_info = edgeclip.Bundle.open(bundle)
    rows: dict[str, np.ndarray] = {}
    for tower in ("text", "vision"):
        for variant in bundle_info.tower(tower).variants:
            if variant == "fp32-portable":
                continue  # for OpenVINO, which has no arm64 runtime here
            if variant == FULL_RANGE_INT8 and saturates_full_range_int8():
                continue  # x86 without VNNI/AMX saturates its full-range weights: never run here (not compared)
            model = edgeclip.load(bundle, variant=variant, threads=1)
            rows[f"{tower}/{variant}"] = (model.encode_text(TEXTS) if tower == "text" else model.encode_image(images()))
    info = {"machine": platform.machine(), "cpu_class": cpu_class(), "flags": sorted(cpu_flags() & {
        "asimddp", "i8mm", "sve", "sve2", "bf16", "avx2", "avx512_vnni"}), "default_variant": {
            tower: edgeclip.load(bundle).variant_name(tower) for tower in ("text", "vision")}}
    np.savez(out, info=json.dumps(info), **rows)
    print(json.dumps(info))


def compare(reference: str, runs: list[str]) -> int:
    ref = np.load(reference)
    worst = 1.0  # the worst margin: cosine - the variant's threshold, + MIN_COSINE
    header = ["variant x tower"] + [json.loads(str(np.load(run)["info"]))["cpu_class"] + f" ({run})" for run in runs]
    print(" | ".join(header))
    not_in_reference = sorted({k for run in runs for k in np.load(run).files if k != "info"} - set(ref.files))
    if not_in_reference:
        print(f"not compared (the reference machine does not run them): {', '.join(not_in_reference)}")
    for key in sorted(k for k in ref.files if k != "info"):
        cells = [key]
        for run in runs:
            rows = np.load(run)
            if key not in rows.files:
                cells.append("missing")
                worst = -1.0
                continue
            a, b = ref[key].astype(np.float64), rows[key].astype(np.float64)
            cosine = float(np.min(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
            threshold = MIN_COSINE_INT4 if key.endswith("/int4") else MIN_COSINE
            worst = min(worst, cosine - threshold + MIN_COSINE)
            cells.append(f"{cosine:.6f}" + ("" if cosine >= threshold else " FAILED"))
        print(" | ".join(cells))
    for run in [reference, *runs]:
        print(run, str(np.load(run)["info"]))
    print(f"worst cosine against its threshold: {'ok' if worst >= MIN_COSINE else 'FAILED'} (every variant >= "
          f"{MIN_COSINE}, int4 >= {MIN_COSINE_INT4}; cosine is the worst row's)")
    return 0 if worst >= MIN_COSINE else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["embed"] and len(sys.argv) == 4:
        embed(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["compare"] and len(sys.argv) >= 4:
        sys.exit(compare(sys.argv[2], sys.argv[3:]))
    else:
        sys.exit(__doc__)
