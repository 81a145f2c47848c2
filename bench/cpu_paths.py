"""Every CPU path for one tower side by side in one process: int8, int8-vnni, int8-vnni-attn (images), OpenVINO (bf16 where the CPU has it) and OpenVINO static int8 (NNCF).

    pip install -e ".[openvino]" nncf
    python -m bench.cpu_paths --bundle B --portable P [--towers text,vision] [--rounds 3] [--threads 2] [--work /tmp/edgeclip-paths]

B holds fp32, int8 and int8-vnni (and int8-vnni-attn: with --int8-pv, also its variant with
attention's PV product in int8, measured and not shipped); P holds fp32-portable (standard ONNX ops, exported from the
PyTorch reference: what OpenVINO reads correctly). Engines alternate turn by turn within each
round (one untimed call first per turn), so the VM's drift hits them alike; the median over all
timed calls is reported, with cosine to the fp32 ONNX graph on the same inputs. NNCF's static int8
model is calibrated once on a few inputs of the benchmark shapes and cached in --work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeclip._files import atomic_write_bytes
from edgeclip.benchmark.measure import pixel_feeds, text_feeds, time_calls
from edgeclip.bundle import Bundle
from edgeclip.machine import machine_tags
from edgeclip.session import TowerSession

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


def ort_runner(bundle: Bundle, tower: str, variant: str, threads: int) -> Runner:
    session = TowerSession(bundle, tower, variant, threads=threads)  # type: ignore[arg-type]
    name = session.variant.outputs[0].name
    return lambda feeds: session.run(feeds)[name]


def int8_pv_runner(bundle: Bundle, tower: str, threads: int) -> Runner:
    """int8-vnni-attn's linear layers with both attention products in int8 (converters/attention_int8.py, context="int8")."""
    import onnx
    import onnxruntime as ort

    from converters.attention_int8 import quantize_attention

    source = bundle.path(bundle.variant(tower, "int8-vnni").graph)  # type: ignore[arg-type]
    graph = onnx.load(str(source), load_external_data=False)
    quantize_attention(graph, context="int8")
    target = source.parent / f"{tower}.int8-pv.onnx"  # beside the weights it points at; removed after loading
    onnx.save(graph, str(target))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    try:
        session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    finally:
        target.unlink()
    return lambda feeds: session.run(None, feeds)[0]


def openvino_runner(model: Any, threads: int, precision: str | None = None) -> Runner:
    import openvino as ov

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    runner = lambda feeds: np.array(request.infer(feeds)[compiled.output(0)])  # noqa: E731
    runner.precision = used  # type: ignore[attr-defined]
    return runner


def nncf_int8(portable_graph: Path, calibration: list[dict[str, np.ndarray]], cache: Path) -> Any:
    import nncf
    import openvino as ov

    if not cache.exists():
        model = ov.Core().read_model(str(portable_graph))
        quantized = nncf.quantize(model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(calibration))
        cache.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(quantized, str(cache))
    return ov.Core().read_model(str(cache))


def cases(tower: str) -> dict[str, dict[str, np.ndarray]]:
    if tower == "text":
        return {"text 16 tokens": text_feeds(1, 16, 1800), "text 512 tokens": text_feeds(1, 512, 1800)}
    return {"image 512 px": pixel_feeds(1, 512)}


def calibration_set(tower: str) -> list[dict[str, np.ndarray]]:
    if tower == "text":
        return [text_feeds(1, n, 1800) for n in (16, 64, 128, 256, 512, 32, 96, 200)]
    return [pixel_feeds(1, 512) for _ in range(4)]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def measure_tower(args: argparse.Namespace, tower: str) -> dict[str, Any]:
    bundle, portable = Bundle.open(args.bundle), Bundle.open(args.portable)
    graph = portable.path(portable.variant(tower, "fp32-portable").graph)  # type: ignore[arg-type]
    import openvino as ov

    engines: dict[str, Runner] = {"edgeclip int8 (today)": ort_runner(bundle, tower, "int8", args.threads)}
    for variant in ("int8-vnni", "int8-vnni-attn"):
        if variant in bundle.tower(tower).variants:  # type: ignore[arg-type]
            engines[f"edgeclip {variant}"] = ort_runner(bundle, tower, variant, args.threads)
    if args.int8_pv and "int8-vnni-attn" in bundle.tower(tower).variants:  # type: ignore[arg-type]
        engines["edgeclip int8-vnni-attn, PV in int8 too"] = int8_pv_runner(bundle, tower, args.threads)
    ov_default = openvino_runner(ov.Core().read_model(str(graph)), args.threads)
    engines[f"OpenVINO {ov_default.precision} (portable graph)"] = ov_default  # type: ignore[attr-defined]
    if not args.no_nncf:
        print(f"{tower}: NNCF static int8 (calibrating once, cached in {args.work}) ...", flush=True)
        quantized = nncf_int8(graph, calibration_set(tower), args.work / f"{tower}-nncf-int8.xml")
        engines["OpenVINO static int8 (NNCF)"] = openvino_runner(quantized, args.threads)
    reference = ort_runner(bundle, tower, "fp32", args.threads)
    result: dict[str, Any] = {}
    for case, feeds in cases(tower).items():
        expected = reference(feeds)
        cosines = {name: cosine(run(feeds), expected) for name, run in engines.items()}
        times: dict[str, list[float]] = {name: [] for name in engines}
        reps = 10 if "16" in case else 2
        for round_index in range(args.rounds):
            order = list(engines) if round_index % 2 == 0 else list(reversed(engines))
            for name in order:
                engines[name](feeds)  # untimed: the other engine's idle threads spin for a while after its last call
                times[name] += time_calls(lambda run=engines[name]: run(feeds), reps, 0.0)
        today = statistics.median(times["edgeclip int8 (today)"])
        result[case] = {name: {"p50_s": statistics.median(t), "vs_today": statistics.median(t) / today,
                               "cosine_to_fp32": cosines[name], "timed_calls": len(t)} for name, t in times.items()}
        for name, r in result[case].items():
            print(f"{case:<16} {name:<36} {r['p50_s'] * 1e3:9.1f} ms  {r['vs_today']:.2f}x today  cos {r['cosine_to_fp32']:.5f}",
                  flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--portable", type=Path, required=True)
    parser.add_argument("--towers", default="text,vision")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeclip-paths"))
    parser.add_argument("--no-nncf", action="store_true", help="skip the NNCF static int8 engine")
    parser.add_argument("--int8-pv", action="store_true", help="also time int8-vnni-attn with attention's PV in int8")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine_tags(), "command": "python -m bench.cpu_paths " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out",)), "date": time.strftime("%Y-%m-%d %H:%M"),
        "threads": args.threads, "rounds": args.rounds, "cases": {}}
    for path in (args.bundle, args.portable):
        if not (path / "manifest.json").is_file():
            parser.error(f"{path} is not a bundle (no manifest.json); build one with python -m converters build")
    for tower in args.towers.split(","):
        results["cases"].update(measure_tower(args, tower))
    stamp = time.strftime("%Y-%m-%d-%H%M")
    atomic_write_bytes(args.out / f"cpu-paths-{results['machine']['cpu_class']}-{stamp}.json", json.dumps(results, indent=1).encode())


if __name__ == "__main__":
    main()
