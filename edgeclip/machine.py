"""What this machine is: its CPU class (from the ISA flags) and the tags a benchmark records.

The CPU class decides which int8 graph runs fastest and accurately (see CPU_VARIANT_ORDER in
model.py): only AVX2 without a dot-product instruction saturates int16 in u8 x s8 GEMMs, which
is what the 7-bit (`reduce_range`) `int8` variant works around. Set EDGECLIP_CPU_CLASS to one of
CPU_CLASSES to override the detection (a VM that hides flags, or to measure another path).
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

# Best first. "arm-dotprod" = ARMv8.2 SDOT/UDOT (all Apple silicon, Graviton 2+, Cortex-A55/A76+).
CPU_CLASSES = ("amx", "avx512-vnni", "avx-vnni", "avx512", "avx2", "arm-dotprod", "arm", "x86", "unknown")
# Classes whose int8 kernels multiply u8 x s8 without an int16 intermediate: full-range s8 weights are exact there.
DOT_PRODUCT_CLASSES = frozenset({"amx", "avx512-vnni", "avx-vnni", "arm-dotprod"})
# x86 classes whose u8 x s8 kernels (vpmaddubsw) add pairs of products in int16, which saturates for
# full-range s8 weights: the int8-vnni variant gives wrong sums there (int8's 7-bit weights stay exact).
SATURATING_CLASSES = frozenset({"avx512", "avx2", "x86"})
FULL_RANGE_INT8 = "int8-vnni"  # the variant with full-range s8 weights
# The variants whose int8 products use full-range s8 operands: exact only where FULL_RANGE_INT8 is.
FULL_RANGE_VARIANTS = frozenset({FULL_RANGE_INT8, "int8-vnni-attn"})
# The flags a benchmark records, as Linux names them.
ARM64_MACHINES = ("arm64", "aarch64", "armv8l", "armv8b")
# Linux arm64's auxiliary-vector bits (asm/hwcap.h), as (AT_HWCAP=16 | AT_HWCAP2=26, bit). The kernel, or
# qemu-user for an emulated CPU, states the cores' features here even where /proc/cpuinfo does not
# (under qemu-user /proc/cpuinfo is the x86 host's).
ARM64_HWCAPS = {"asimddp": (16, 1 << 20), "sve": (16, 1 << 22), "sve2": (26, 1 << 1), "i8mm": (26, 1 << 13),
                "bf16": (26, 1 << 14)}
RECORDED_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
                  "amx_int8", "amx_bf16", "asimddp", "i8mm", "bf16", "sve")


def cpu_class_from_flags(flags: Iterable[str], machine: str) -> str:
    """The class of a CPU with these /proc/cpuinfo flags (x86 "flags" or ARM "Features") and platform.machine()."""
    flags = {flag.lower() for flag in flags}
    if machine.lower() in ARM64_MACHINES:
        return "arm-dotprod" if "asimddp" in flags else "arm"
    if machine.lower() not in ("x86_64", "amd64", "i686", "i386", "x86"):
        return "unknown"
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags or "avxvnni" in flags:
        return "avx-vnni"
    if "avx512bw" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "x86"


def arm64_flags_from_hwcaps(hwcap: int, hwcap2: int) -> frozenset[str]:
    """The flags (cpuinfo's names) that arm64 AT_HWCAP and AT_HWCAP2 values set."""
    values = {16: hwcap, 26: hwcap2}
    return frozenset(name for name, (kind, bit) in ARM64_HWCAPS.items() if values[kind] & bit)


def _arm64_hwcap_flags() -> frozenset[str]:
    try:
        getauxval = ctypes.CDLL(None).getauxval  # glibc and musl both have it
    except (OSError, AttributeError):
        return frozenset()
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return arm64_flags_from_hwcaps(getauxval(16), getauxval(26))


def _cpuinfo_flags(keys: tuple[str, ...]) -> frozenset[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in keys:
                return frozenset(value.split())
    return frozenset()


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's flags: /proc/cpuinfo on Linux (plus the auxiliary vector's HWCAP bits on arm64), sysctl on
    macOS; empty where neither answers."""
    if sys.platform.startswith("linux") and platform.machine().lower() in ARM64_MACHINES:
        # only an ARM "Features" line counts: under qemu-user the x86 host's "flags" line shows through
        return _cpuinfo_flags(("features",)) | _arm64_hwcap_flags()
    if Path("/proc/cpuinfo").exists():
        return _cpuinfo_flags(("flags", "features"))
    if platform.system() == "Darwin":
        if platform.machine() == "arm64":
            return frozenset({"asimddp"})  # every Apple silicon core has the dot-product instructions
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                                 capture_output=True, text=True, timeout=5, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return frozenset()
        return frozenset(flag.lower().replace(".", "_") for flag in out.split())
    return frozenset()


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def saturates_full_range_int8() -> bool:
    """True where ONNX Runtime's int8 kernels saturate full-range s8 weights (x86 without VNNI or AMX):
    the real CPU's flags decide, whatever EDGECLIP_CPU_CLASS says (it cannot change the kernels)."""
    return cpu_class_from_flags(cpu_flags(), platform.machine()) in SATURATING_CLASSES


def cpu_class() -> str:
    """This machine's class; EDGECLIP_CPU_CLASS overrides it."""
    forced = os.environ.get("EDGECLIP_CPU_CLASS")
    if forced:
        if forced not in CPU_CLASSES:
            from .errors import EdgeClipError

            raise EdgeClipError(f"EDGECLIP_CPU_CLASS={forced!r} is not one of {', '.join(CPU_CLASSES)}")
        return forced
    return cpu_class_from_flags(cpu_flags(), platform.machine())


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name from nvidia-smi, where there is one (no CUDA library is loaded for this)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    names = out.stdout.strip().splitlines()
    return names[0].strip() if out.returncode == 0 and names else None


def machine_tags() -> dict[str, Any]:
    """What a benchmark run records about where it ran."""
    import onnxruntime as ort

    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cpu_class": cpu_class(),
        "isa": {flag: flag in flags for flag in RECORDED_FLAGS},
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers_available": ort.get_available_providers(),
        "gpu": gpu_name(),
    }
