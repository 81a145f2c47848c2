"""`edgeclip serve` under load, on loopback, beside the same bundle in-process (issue 13).

    python -m bench.serve --bundle BUNDLE [--threads 2] [--phase-seconds 20] [--soak-seconds 600]

Starts `edgeclip serve` as its own process (so its RSS is its own) and a loopback image host, then:
the launch post's request as published (dimensions "768", the image URL pointed at the local host);
a 16-token query's latency over HTTP vs in-process, interleaved call by call; short-query throughput
at concurrency 1, 4 and 16 with the machine's int8 GEMM ceilings at 16 and 256 rows beside it; image
throughput at concurrency 4 vs in-process batches of 4; an open-loop overload at 4x the measured
capacity (429 latency, 5xx count, RSS); a mixed soak (RSS growth, errors); then the network's edge
(bench/serve_edge.py: huge requests, slow-header connections, a client that hangs up). `--edge` runs only
the latency comparison and the edge. Every loop is bounded in count and time. Writes
bench/results/serve-<date>.{json,md,png} tagged with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import re
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import edgeclip
from bench import serve_edge
from bench.ceilings import gemm_gflops
from bench.report import save_json_and_markdown
from bench.serve_parts import Client, Server, image_host, percentiles, photo
from bench.run import machine_tag

QUERY_TOKENS = 16


# ---- the pieces ------------------------------------------------------------------------------------

def query_of_tokens(model: edgeclip.EdgeClip, tokens: int, seed: int = 0) -> str:
    words = "where can I find a quiet beach near the old harbour with good light for photos at sunset".split()
    random.Random(seed).shuffle(words)
    text = " ".join(words)
    while len(model.tokenize([text])[0].ids) > tokens:
        text = text.rsplit(" ", 1)[0]
    while len(model.tokenize([text])[0].ids) < tokens:
        text += " a"
    return text


def closed_loop(port: int, concurrency: int, seconds: float, make_body: Callable[[int], dict[str, Any]],
                max_requests: int = 100_000) -> dict[str, Any]:
    """`concurrency` clients, each sending its next request when the last one is answered."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    counter = iter(range(max_requests))
    stop_at = time.monotonic() + seconds

    def worker() -> None:
        client = Client(port)
        while time.monotonic() < stop_at:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            started = time.perf_counter()
            status, _ = client.post(make_body(index))
            with lock:
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    return {"concurrency": concurrency, "requests": len(latencies), "seconds": round(wall, 2),
            "per_s": round(len(latencies) / wall, 2), "statuses": statuses, **percentiles(latencies)}


async def open_loop(port: int, rate: float, seconds: float, body: bytes, connections: int) -> dict[str, Any]:
    """Requests at a fixed rate whatever the answers (what overload looks like), on keep-alive connections.

    HTTP/1.1 has one request in flight per connection, so there must be more connections than the
    server queues requests (else the client, not the server, is what limits the load)."""
    total = int(rate * seconds)
    start = time.monotonic() + 0.5
    results: list[tuple[int, float, float]] = []  # status, latency, lateness of the send
    next_index = 0
    request = (f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    reconnects = 0

    async def worker() -> None:
        nonlocal next_index, reconnects
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while next_index < total:
            index, next_index = next_index, next_index + 1
            due = start + index / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            sent = time.monotonic()
            for _ in range(3):
                try:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    break
                except (asyncio.IncompleteReadError, ConnectionError):  # the server closed an idle keep-alive connection
                    reconnects += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
            else:
                raise ConnectionError("the server closed the connection three times in a row")
            length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            results.append((int(head.split(b" ", 2)[1]), time.monotonic() - sent, sent - due))
        writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    by_status: dict[int, list[float]] = {}
    for status, latency, _ in results:
        by_status.setdefault(status, []).append(latency)
    lateness = [late for *_, late in results]
    return {"offered_per_s": round(rate, 1), "requests": len(results), "statuses": {s: len(v) for s, v in by_status.items()},
            "latency_by_status": {s: percentiles(v) for s, v in by_status.items()},
            "send_lateness_p50_ms": round(statistics.median(lateness) * 1e3, 1) if lateness else None,
            "reconnects": reconnects}


# ---- the phases ------------------------------------------------------------------------------------

def launch_post(port: int, host: str, model: edgeclip.EdgeClip) -> dict[str, Any]:
    """The launch post's request with only the URL changed: dimensions "768" as a string, float output."""
    body = {"input": [{"text": "Bridge close-shot"}, {"url": f"{host}/id/84/1280/848.jpg"}],
            "model": "jina-clip-v2", "encoding_type": "float", "dimensions": "768"}
    status, answer = Client(port).post(body)
    if status != 200:
        return {"status": status, "answer": answer}
    got = np.array([d["embedding"] for d in answer["data"]])
    expected = model.encode_text(["Bridge close-shot"])[:, :768]
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    return {"status": status, "widths": [len(d["embedding"]) for d in answer["data"]], "usage": answer["usage"],
            "text_max_abs_diff_vs_in_process": float(np.abs(got[0] - expected[0]).max())}


def latency(port: int, model: edgeclip.EdgeClip, query: str, rounds: int, block: int = 5) -> dict[str, Any]:
    """Alternating blocks of `block` calls, with a pause between: call-by-call interleaving would have
    each process's ONNX Runtime threads still spinning while the other one runs (measured: both 2x slower)."""
    client = Client(port)
    http_s, local_s = [], []

    def timed(call: Callable[[], object]) -> float:
        started = time.perf_counter()
        call()
        return time.perf_counter() - started

    for _ in range(3):  # warm both paths
        model.encode_text([query])
        client.post({"model": "jina-clip-v2", "input": [query]})
    for _ in range(max(1, rounds // block)):
        local_s += [timed(lambda: model.encode_text([query])) for _ in range(block)]
        time.sleep(0.1)
        http_s += [timed(lambda: client.post({"model": "jina-clip-v2", "input": [query]})) for _ in range(block)]
        time.sleep(0.1)
    ratio = statistics.median(http_s) / statistics.median(local_s)
    return {"tokens": QUERY_TOKENS, "block": block, "in_process": percentiles(local_s), "http": percentiles(http_s),
            "p50_ratio_http_over_in_process": round(ratio, 3)}


def ceilings(model: edgeclip.EdgeClip, query: str, threads: int) -> dict[str, Any]:
    g16, g256 = gemm_gflops(16, 1024, 4096, "int8", threads), gemm_gflops(256, 1024, 4096, "int8", threads)
    ids = model.tokenize([query])[0].ids

    def rows_per_s(batch: int, repeats: int = 7) -> float:
        model.run_tokens([ids] * batch, batch_size=batch)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.run_tokens([ids] * batch, batch_size=batch)
            times.append(time.perf_counter() - started)
        return batch / statistics.median(times)

    one, sixteen = rows_per_s(1), rows_per_s(16)
    return {"int8_gemm_gflops_16_rows": round(g16, 1), "int8_gemm_gflops_256_rows": round(g256, 1),
            "gemm_ratio_256_over_16": round(g256 / g16, 2), "in_process_queries_per_s_batch_1": round(one, 2),
            "in_process_queries_per_s_batch_16": round(sixteen, 2), "in_process_batching_gain": round(sixteen / one, 2)}


def images(port: int, model: edgeclip.EdgeClip, pictures: list[bytes]) -> dict[str, Any]:
    model.encode_image(pictures[:1])
    started = time.perf_counter()
    model.encode_image(pictures, batch_size=4)
    local = len(pictures) / (time.perf_counter() - started)
    encoded = [base64.b64encode(p).decode() for p in pictures]
    served = closed_loop(port, 4, 3600, lambda i: {"input": [{"image": encoded[i % len(encoded)]}]}, max_requests=len(pictures))
    return {"images": len(pictures), "in_process_batch_4_per_s": round(local, 3), "http_concurrency_4": served,
            "ratio_http_over_in_process": round(served["per_s"] / local, 3)}


def overload(server: Server, capacity: float, seconds: float, max_queue: int = 512) -> dict[str, Any]:
    body = json.dumps({"model": "jina-clip-v2", "input": ["how do I get to the station from here"]}).encode()
    samples: list[float] = [server.rss_mb()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            samples.append(server.rss_mb())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = asyncio.run(open_loop(server.port, 4 * capacity, seconds, body, connections=max_queue + 512))
    finally:
        done.set()
        sampler.join()
    fives = sum(n for status, n in result["statuses"].items() if status >= 500)
    return {**result, "capacity_per_s": round(capacity, 1), "server_errors_5xx": fives,
            "rss_mb_before": round(samples[0], 1), "rss_mb_peak": round(max(samples), 1), "rss_mb_after": round(samples[-1], 1)}


def soak(server: Server, seconds: float, texts: list[str], encoded_images: list[str]) -> dict[str, Any]:
    rng_lock = threading.Lock()
    rng = random.Random(7)
    kinds = ["float", "base64", "binary", "ubinary"]

    def body(_: int) -> dict[str, Any]:
        with rng_lock:
            roll = rng.random()
            if roll < 0.15:
                return {"input": [{"image": rng.choice(encoded_images)}], "dimensions": rng.choice([64, 256, 1024])}
            items: list[Any] = [rng.choice(texts) for _ in range(rng.randint(1, 8))]
            return {"input": items, "embedding_type": rng.choice([*kinds, kinds[:2]]), "task": rng.choice([None, "retrieval.query"]),
                    "dimensions": str(rng.choice([64, 128, 512, 768, 1024]))}

    timeline: list[tuple[float, float]] = []
    done = threading.Event()
    idle_before = server.rss_mb()
    started = time.monotonic()

    def sample() -> None:
        while not done.wait(1.0):
            timeline.append((round(time.monotonic() - started, 1), round(server.rss_mb(), 1)))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = closed_loop(server.port, 4, seconds, body)
    finally:
        done.set()
        sampler.join()
    time.sleep(5)
    idle_after = server.rss_mb()
    # RSS swings by ~1.5 GB within a minute (a batch of 4 images or 32 long texts in flight, then given
    # back), so growth is measured idle: 5 s after the soak's last answer vs just before its first
    # request. The per-minute floors are reported beside it (a 1 s sample lands mid-batch often).
    minute = min(60.0, seconds / 4)
    floors = [min(rss for t, rss in timeline if start <= t < start + minute)
              for start in np.arange(0, timeline[-1][0] - minute + 1e-9, minute)]
    errors = sum(n for status, n in result["statuses"].items() if status != 200)
    return {**result, "errors": errors, "rss_timeline": timeline, "rss_floor_by_minute": floors,
            "rss_growth_mb": round(idle_after - idle_before, 1),
            "rss_peak_mb": max(rss for _, rss in timeline),
            "rss_idle_mb_before_after": [round(idle_before, 1), round(idle_after, 1)]}


# ---- the report ------------------------------------------------------------------------------------

def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    runs = results["throughput"]
    labels = [str(r["concurrency"]) for r in runs]
    x = np.arange(len(runs))
    for offset, key in zip((-0.25, 0, 0.25), ("p50_ms", "p95_ms", "p99_ms")):
        ax1.bar(x + offset, [r[key] for r in runs], 0.25, label=key.split("_")[0])
    ax1.set_xticks(x, labels)
    ax1.set_xlabel("concurrent clients (16-token queries)")
    ax1.set_ylabel("latency (ms)")
    ax1.legend()
    ax1b = ax1.twinx()
    ax1b.plot(x, [r["per_s"] for r in runs], "k-o")
    ax1b.set_ylabel("queries / s")
    by_status = results["overload"]["latency_by_status"]
    names = sorted(by_status)
    ax2.bar([f"{s}\n(n={by_status[s]['n']})" for s in names], [by_status[s]["p99_ms"] for s in names])
    ax2.set_yscale("log")
    ax2.set_title(f"4x capacity ({results['overload']['offered_per_s']}/s offered): p99 by status", fontsize=9)
    ax2.set_ylabel("p99 latency (ms)")
    timeline = results["soak"]["rss_timeline"]
    ax3.plot([t / 60 for t, _ in timeline], [rss for _, rss in timeline])
    ax3.set_xlabel("soak minutes")
    ax3.set_ylabel("server RSS (MB)")
    ax3.set_title(f"mixed soak: idle growth {results['soak']['rss_growth_mb']} MB, {results['soak']['errors']} errors",
                  fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    tmp.replace(path)


def markdown(r: dict[str, Any], command: str) -> str:
    lat = r["latency"]
    lines = [f"# edgeclip serve under load ({r['machine']['date']})", "", f"`{command}`", "",
             f"CPU: {r['machine']['cpu']} (class {r['machine'].get('cpu_class')}), {r['machine']['cores']} cores, server threads {r['threads']}; "
             f"the load generator shares the same cores.", "",
             f"- 16-token query p50: HTTP {lat['http']['p50_ms']} ms vs in-process {lat['in_process']['p50_ms']} ms "
             f"= **{lat['p50_ratio_http_over_in_process']}x** (goal <= 1.10x)"]
    if "throughput" in r:
        lines += load_markdown(r)
    if "edge" in r:
        lines += serve_edge.markdown(r["edge"])
    lines.append(f"- server exit code on SIGTERM: {r['exit_code']}, tracebacks in its log: {r['tracebacks']}")
    return "\n".join(lines) + "\n"


def load_markdown(r: dict[str, Any]) -> list[str]:
    ceil, img, over, soak_ = r["ceilings"], r["images"], r["overload"], r["soak"]
    lines = ["", "| clients | queries/s | vs 1 client | p50 ms | p95 ms | p99 ms | statuses |", "|---|---|---|---|---|---|---|"]
    base = r["throughput"][0]["per_s"]
    for run in r["throughput"]:
        lines.append(f"| {run['concurrency']} | {run['per_s']} | {run['per_s'] / base:.2f}x | {run['p50_ms']} | {run['p95_ms']} | "
                     f"{run['p99_ms']} | {run['statuses']} |")
    lines += ["", f"- ceilings beside it: int8 GEMM 1024x4096 at 16 rows {ceil['int8_gemm_gflops_16_rows']} GFLOP/s, at 256 rows "
              f"{ceil['int8_gemm_gflops_256_rows']} (x{ceil['gemm_ratio_256_over_16']}); the text graph in-process: "
              f"{ceil['in_process_queries_per_s_batch_1']} q/s at batch 1, {ceil['in_process_queries_per_s_batch_16']} at batch 16 "
              f"(x{ceil['in_process_batching_gain']})",
              f"- images: HTTP at 4 clients {img['http_concurrency_4']['per_s']}/s vs in-process batches of 4 "
              f"{img['in_process_batch_4_per_s']}/s = **{img['ratio_http_over_in_process']}x** (goal >= 0.95x)",
              f"- overload at 4x capacity ({over['offered_per_s']}/s offered, capacity {over['capacity_per_s']}/s): statuses "
              f"{over['statuses']}, 5xx {over['server_errors_5xx']}, latency by status {over['latency_by_status']}, RSS "
              f"{over['rss_mb_before']} -> peak {over['rss_mb_peak']} -> {over['rss_mb_after']} MB",
              f"- soak {soak_['seconds']} s mixed (texts, images, every option): {soak_['requests']} requests, errors "
              f"{soak_['errors']}, idle RSS growth {soak_['rss_growth_mb']} MB (goal < 20 MB; floors by minute "
              f"{[round(f) for f in soak_['rss_floor_by_minute']]}), peak {soak_['rss_peak_mb']} MB, idle before/after "
              f"{soak_['rss_idle_mb_before_after']} MB",
              f"- launch-post request (dimensions \"768\"): {r['launch_post']}"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phase-seconds", type=float, default=20.0)
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    parser.add_argument("--rounds", type=int, default=300, help="latency calls per path (in alternating blocks of 5)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--edge", action="store_true", help="only the latency comparison and the network's edge")
    args = parser.parse_args()
    command = "python -m bench.serve " + " ".join(sys.argv[1:])
    stamp = time.strftime("%Y-%m-%d-%H%M")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the overload's ~1,000 connections, both ends
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    args.out.mkdir(parents=True, exist_ok=True)

    pictures = {"/id/84/1280/848.jpg": photo(1280, 848, 0), **{f"/{i}.jpg": photo(640, 480, i) for i in range(8)}}
    host = image_host(pictures)
    model = edgeclip.load(args.bundle, threads=args.threads)
    server = Server(args.bundle, args.threads, Path(f"/tmp/edgeclip-bench-serve-{stamp}.log"), "--fetch-urls", "--allow-host", "127.0.0.1")
    results: dict[str, Any] = {"machine": machine_tag(args.bundle), "command": command, "threads": args.threads}
    try:
        query = query_of_tokens(model, QUERY_TOKENS)
        if args.edge:
            print("latency ...", file=sys.stderr, flush=True)
            results["latency"] = latency(server.port, model, query, args.rounds)
            del model
            results["edge"] = edge(server, query)
            return
        print("launch post ...", file=sys.stderr, flush=True)
        results["launch_post"] = launch_post(server.port, host, model)
        print("latency ...", file=sys.stderr, flush=True)
        results["latency"] = latency(server.port, model, query, args.rounds)
        print("ceilings ...", file=sys.stderr, flush=True)
        results["ceilings"] = ceilings(model, query, args.threads)
        queries = [query_of_tokens(model, QUERY_TOKENS, seed) for seed in range(64)]
        results["throughput"] = []
        for concurrency in (1, 4, 16):
            print(f"throughput at {concurrency} ...", file=sys.stderr, flush=True)
            results["throughput"].append(closed_loop(server.port, concurrency, args.phase_seconds,
                                                     lambda i: {"input": [queries[i % len(queries)]]}))
        print("images ...", file=sys.stderr, flush=True)
        results["images"] = images(server.port, model, [pictures[f"/{i}.jpg"] for i in range(8)])
        del model  # the soak measures the server, not this process
        print("overload ...", file=sys.stderr, flush=True)
        results["overload"] = overload(server, results["throughput"][-1]["per_s"], args.phase_seconds)
        print("soak ...", file=sys.stderr, flush=True)
        texts = [" ".join(["word"] * n) + f" {n}" for n in (3, 10, 30, 60, 120, 200)] + queries[:10]
        results["soak"] = soak(server, args.soak_seconds, texts,
                               [base64.b64encode(pictures[f"/{i}.jpg"]).decode() for i in range(4)])
        results["edge"] = edge(server, query)
    finally:
        results["exit_code"] = server.stop()
        results["tracebacks"] = server.log_path.read_text().count("Traceback")
        stem = args.out / f"serve-{stamp}{'-edge' if args.edge else ''}"
        if "soak" in results:
            plot(results, stem.with_suffix(".png"))
        save_json_and_markdown(stem, results, markdown(results, command))


def edge(server: Server, query: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    phases: dict[str, Callable[[Server, str], dict[str, Any]]] = {
        "baseline": serve_edge.baseline, "huge": serve_edge.huge,
        "flood": lambda s, q: serve_edge.huge(s, q, pause_s=0.0), "slow_headers": serve_edge.slow_headers}
    for name, phase in phases.items():
        print(f"edge: {name} ...", file=sys.stderr, flush=True)
        result[name] = phase(server, query)
    print("edge: hung up ...", file=sys.stderr, flush=True)
    result["hung_up"] = serve_edge.hung_up(server)
    return result


if __name__ == "__main__":
    main()
