"""`edgeclip bench`: the JSON report, --compare, bad flags, and the CPU class read from ISA flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeclip.benchmark import SCHEMA, compare_lines, load_report
from edgeclip.cli import main as cli_main
from edgeclip import machine
from edgeclip.machine import CPU_CLASSES, arm64_flags_from_hwcaps, cpu_class_from_flags

# Abridged /proc/cpuinfo flag lines of real CPUs (the flags that matter, plus neighbours that must not).
ZEN3 = "fpu sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand avx2 bmi2 sha_ni vaes vpclmulqdq"
ZEN4 = ZEN3 + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni avx512_bitalg"
SKYLAKE_SP = ZEN3 + " avx512f avx512dq avx512cd avx512bw avx512vl"
ALDER_LAKE = ZEN3 + " avx_vnni"
SAPPHIRE_RAPIDS = ZEN4 + " avx_vnni avx512_fp16 amx_bf16 amx_tile amx_int8"
GRAVITON2 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs"
CORTEX_A72 = "fp asimd evtstrm crc32 cpuid"


@pytest.mark.parametrize(("flags", "machine", "expected"), [
    (ZEN3, "x86_64", "avx2"), (ZEN4, "x86_64", "avx512-vnni"), (SKYLAKE_SP, "x86_64", "avx512"),
    (ALDER_LAKE, "x86_64", "avx-vnni"), (SAPPHIRE_RAPIDS, "x86_64", "amx"), (GRAVITON2, "aarch64", "arm-dotprod"),
    (GRAVITON2, "arm64", "arm-dotprod"), (CORTEX_A72, "aarch64", "arm"), ("fpu sse sse2 avx", "x86_64", "x86"),
    ("", "riscv64", "unknown"), ("AVX2 AVX512_VNNI", "AMD64", "avx512-vnni"),  # sysctl on Intel macOS: upper case
])
def test_cpu_class_from_flags(flags: str, machine: str, expected: str) -> None:
    assert cpu_class_from_flags(flags.split(), machine) == expected
    assert expected in CPU_CLASSES


def test_arm64_hwcap_bits() -> None:
    """The auxiliary vector's bits as Linux's asm/hwcap.h defines them (HWCAP_ASIMDDP 1<<20, HWCAP_SVE
    1<<22; HWCAP2_SVE2 1<<1, HWCAP2_I8MM 1<<13, HWCAP2_BF16 1<<14)."""
    assert arm64_flags_from_hwcaps(0, 0) == frozenset()
    assert arm64_flags_from_hwcaps(1 << 20, 0) == {"asimddp"}
    assert arm64_flags_from_hwcaps((1 << 20) | (1 << 22) | 0xFF, (1 << 1) | (1 << 13) | (1 << 14)) == {
        "asimddp", "sve", "sve2", "i8mm", "bf16"}
    assert arm64_flags_from_hwcaps(0xFF, 1 << 2) == frozenset()  # neighbouring bits mean other features


def test_arm64_class_ignores_an_x86_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under qemu-user an arm64 process reads the x86 host's /proc/cpuinfo: only the HWCAP bits count."""
    monkeypatch.delenv("EDGECLIP_CPU_CLASS", raising=False)
    monkeypatch.setattr(machine.sys, "platform", "linux")
    monkeypatch.setattr(machine.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(machine, "_cpuinfo_flags", lambda keys: frozenset(ZEN4.split()) if "flags" in keys else frozenset())
    for hwcaps, expected in (((0, 0), "arm"), (((1 << 20), (1 << 13)), "arm-dotprod")):
        monkeypatch.setattr(machine, "_arm64_hwcap_flags", lambda h=hwcaps: arm64_flags_from_hwcaps(*h))
        machine.cpu_flags.cache_clear()
        try:
            assert machine.cpu_class() == expected
            assert "avx2" not in machine.cpu_flags()
        finally:
            machine.cpu_flags.cache_clear()


@pytest.fixture(scope="module")
def report(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "run.json"
    assert cli_main(["bench", str(tiny_bundle), "--seconds", "0.05", "--min-reps", "2", "--batch", "1,2",
                     "--tokens", "8,32", "--threads", "1", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_bench_writes_every_field(report: dict, tiny_bundle: Path) -> None:
    assert report["schema"] == SCHEMA and report["command"].startswith("edgeclip")
    machine = report["machine"]
    for key in ("cpu", "cpu_class", "isa", "arch", "cores", "onnxruntime", "providers_available", "gpu", "python"):
        assert key in machine, key
    assert machine["cpu_class"] in CPU_CLASSES and "CPUExecutionProvider" in machine["providers_available"]
    assert report["bundle"]["manifest_sha256"] == __import__("hashlib").sha256((tiny_bundle / "manifest.json").read_bytes()).hexdigest()
    assert report["settings"] == {"threads": 1, "seconds": 0.05, "min_reps": 2}
    assert [(s["tower"], s["variant"]) for s in report["sessions"]] == [("text", "fp32"), ("vision", "fp32")]
    for session in report["sessions"]:
        assert session["load_s"] > 0 and session["first_call_s"] > 0 and session["peak_rss_mb"] > 20
        assert session["providers_in_use"] == ["CPUExecutionProvider"]
    shapes = [(r["tower"], r["batch"], r.get("tokens"), r.get("image_size")) for r in report["rows"]]
    assert shapes == [("text", 1, 8, None), ("text", 1, 32, None), ("text", 2, 8, None), ("text", 2, 32, None),
                      ("vision", 1, None, 512), ("vision", 2, None, 512)]
    for row in report["rows"]:
        assert row["reps"] >= 2 and 0 < row["p50_s"] <= row["p95_s"]
        assert row["items_per_s"] == pytest.approx(row["batch"] / row["p50_s"])


def test_compare_prints_ratios(report: dict, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = json.loads(json.dumps(report))
    other["machine"]["cpu"] = "Other CPU"
    for row in other["rows"]:
        row["p50_s"] = row["p50_s"] * 4  # a machine four times slower at every shape
    other["rows"] = [r for r in other["rows"] if r.get("tokens") != 32]  # and one shape it never ran
    lines = compare_lines(report, [other])
    assert "Other CPU" in lines[1]
    text_b1_8 = next(line for line in lines if "text b1 8 tok" in line)
    assert text_b1_8.endswith("= 4.00x")
    assert next(line for line in lines if "text b1 32 tok" in line).endswith("[1] -")
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    assert cli_main(["bench", str(tiny_bundle), "--towers", "text", "--tokens", "8", "--seconds", "0", "--min-reps", "1",
                     "--compare", str(path)]) == 0
    out = capsys.readouterr().out
    assert "compared runs" in out and "text b1 8 tok" in out and "x" in out.split("text b1 8 tok")[-1]


def test_the_committed_gpu_reference_loads_for_compare() -> None:
    reference = load_report(Path(__file__).parents[2] / "bench/results/gpu-reference-h100.json")
    assert {r["variant"] for r in reference["rows"]} == {"pytorch-fp32", "pytorch-fp16"}


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--batch", "x"], ["--tokens", ""], ["--towers", "audio"],
                                  ["--seconds", "-1"], ["--threads", "0"], ["--variants", "int3"],
                                  ["--variants", "all,fp32"], ["--providers", "NoSuchExecutionProvider"],
                                  ["--tokens", "9000"], ["--compare", "/no/such.json"], ["--min-reps", "0"]])
def test_bad_flags_exit_2(argv: list[str], tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = cli_main(["bench", str(tiny_bundle), *argv])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_file_that_is_no_report_is_refused(tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": []}))
    assert cli_main(["bench", str(tiny_bundle), "--compare", str(bad)]) == 2
    assert "not an edgeclip bench report" in capsys.readouterr().err
