"""`edgeclip serve` at the network's edge (issue 24): what a huge request, slow-header connections and a
client that hangs up cost everyone else. Run by `python -m bench.serve --edge` (or with the rest).

- baseline: the probes below with nothing else going on, for comparison.
- huge: requests of 1,000,000 and 3,000,000 `{"text": "a"}` items (15 and 45 MB, under the 64 MB cap),
  one at a time 0.5 s apart, then back to back (a flood), while two probes run on their own keep-alive
  connections (`GET /live` and a short query); their p99 and failures, the huge requests' answers, and
  the server's RSS above idle (VmRSS sampled every 10 ms).
- slow headers: 300 connections that send half their headers and nothing more, reopened whenever the
  server closes one, for `seconds`; the same probes meanwhile; how long the server kept each open.
- hung up: a request of 40 photos whose client closes the connection after 1 s; the server's CPU
  seconds from the hang-up until it is idle again, beside the CPU seconds one photo costs.
Every loop is bounded in count and time; loopback only.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.serve_parts import Client, Server, percentiles, photo

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024  # type: ignore[union-attr]


class Probes:
    """`GET /live` and a short query, each on its own keep-alive connection, back to back with a 20 ms
    pause, until stopped; a failure is any exception or a status other than 200."""

    def __init__(self, port: int, query: str) -> None:
        self.port, self.query = port, query
        self.latencies: dict[str, list[float]] = {"live": [], "query": []}
        self.failures: dict[str, list[str]] = {"live": [], "query": []}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(name,)) for name in self.latencies]

    def __enter__(self) -> Probes:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, name: str) -> None:
        client = Client(self.port)
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                if name == "live":
                    status, _ = client.get("/live")
                else:
                    status, _ = client.post({"model": "jina-clip-v2", "input": [self.query]})
            except Exception as exc:  # noqa: BLE001 - a probe that fails is the measurement
                self.failures[name].append(repr(exc)[:200])
                client = Client(self.port)
                continue
            self.latencies[name].append(time.perf_counter() - started)
            if status != 200:
                self.failures[name].append(f"status {status}")
            self._stop.wait(0.02)

    def report(self) -> dict[str, Any]:
        return {name: {**percentiles(self.latencies[name]), "failures": len(self.failures[name]),
                       "failure_examples": self.failures[name][:3]} for name in self.latencies}


def sampled_rss(pid: int, work: Callable[[], Any]) -> tuple[Any, float]:
    """work()'s result and the server's peak RSS while it ran (sampled every 10 ms)."""
    peak = rss_mb(pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, rss_mb(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return result, peak


def raw_post(port: int, body: bytes, timeout: float = 120) -> tuple[int, float]:
    """POST the body over a fresh connection; the status and the seconds until the answer's head."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        head = (f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        try:
            sock.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while b"\r\n" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    return int(answer.split(b" ", 2)[1]) if answer else 0, time.perf_counter() - started


def baseline(server: Server, query: str, seconds: float = 15.0) -> dict[str, Any]:
    """The probes with nothing else going on: what the phases below are compared with."""
    cpu = cpu_seconds(server.process.pid)
    with Probes(server.port, query) as probes:
        time.sleep(seconds)
    return {"seconds": seconds, "probes": probes.report(),
            "server_cpu_s_per_s": round((cpu_seconds(server.process.pid) - cpu) / seconds, 2)}


def huge(server: Server, query: str, seconds: float = 15.0, pause_s: float = 0.5,
         sizes: tuple[int, ...] = (1_000_000, 1_000_000, 3_000_000)) -> dict[str, Any]:
    """Huge requests one after another (cycling through `sizes`, `pause_s` between) for `seconds`, with
    the probes running; pause_s=0 is a flood."""
    bodies = {n: json.dumps({"model": "jina-clip-v2", "input": [{"text": "a"}] * n}).encode() for n in set(sizes)}
    time.sleep(2)
    idle = rss_mb(server.process.pid)
    answers: list[dict[str, Any]] = []

    def send_all() -> None:
        stop_at = time.monotonic() + seconds
        while time.monotonic() < stop_at and len(answers) < 1000:
            n = sizes[len(answers) % len(sizes)]
            status, took = raw_post(server.port, bodies[n])
            answers.append({"items": n, "status": status, "seconds_to_answer": round(took, 3)})
            time.sleep(pause_s)

    cpu = cpu_seconds(server.process.pid)
    with Probes(server.port, query) as probes:
        _, peak = sampled_rss(server.process.pid, send_all)
    answered = {f"{n:,} items ({len(bodies[n]) / 1e6:.0f} MB)": sorted({a["status"] for a in answers if a["items"] == n})
                for n in sorted(bodies)}
    return {"seconds": seconds, "pause_s": pause_s, "requests": len(answers), "statuses": answered,
            "seconds_to_answer": percentiles([a["seconds_to_answer"] for a in answers]),
            "probes": probes.report(), "server_cpu_s_per_s": round((cpu_seconds(server.process.pid) - cpu) / seconds, 2),
            "rss_idle_mb": round(idle, 1), "rss_peak_mb": round(peak, 1), "rss_above_idle_mb": round(peak - idle, 1)}


def slow_headers(server: Server, query: str, connections: int = 300, seconds: float = 25.0) -> dict[str, Any]:
    """`connections` sockets that each send half a request head and then wait, reopened once the
    server closes them; how long the server kept them, and what the probes saw meanwhile."""
    partial = b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    held: list[tuple[socket.socket, float]] = []
    kept: list[float] = []
    answers: dict[str, int] = {}
    refused = 0
    stop_at = time.monotonic() + seconds

    def open_one() -> None:
        nonlocal refused
        try:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(partial)
            sock.setblocking(False)
            held.append((sock, time.monotonic()))
        except OSError:
            refused += 1

    with Probes(server.port, query) as probes:
        time.sleep(1)
        for _ in range(connections):
            open_one()
        while time.monotonic() < stop_at:
            for sock, opened in list(held):
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                held.remove((sock, opened))
                kept.append(time.monotonic() - opened)
                first = data.split(b"\r\n", 1)[0].decode("latin-1") or "closed without an answer"
                answers[first] = answers.get(first, 0) + 1
                sock.close()
                open_one()
            time.sleep(0.05)
        for sock, _ in held:
            sock.close()
    return {"connections": connections, "seconds": seconds, "closed_by_server": len(kept), "answers": answers,
            "open_failures": refused, "seconds_kept": percentiles(kept) if kept else {}, "probes": probes.report()}


def hung_up(server: Server, images: int = 40, after_s: float = 1.0) -> dict[str, Any]:
    """A request of `images` photos whose client closes after `after_s`; server CPU from then on."""
    pid = server.process.pid
    pictures = [base64.b64encode(photo(800, 600, 100 + i)).decode() for i in range(images)]  # ~7 MB, as reported
    body = json.dumps({"model": "jina-clip-v2", "input": [{"image": p} for p in pictures]}).encode()

    def idle_cpu() -> float:  # wait until the server has been idle for 1.5 s; its CPU seconds then
        last, still = cpu_seconds(pid), 0
        deadline = time.monotonic() + 600
        while still < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
            now = cpu_seconds(pid)
            still = still + 1 if now - last < 0.05 else 0
            last = now
        return last

    # one photo to completion: what each costs
    before = idle_cpu()
    status, seconds = raw_post(server.port, json.dumps({"model": "jina-clip-v2", "input": [{"image": pictures[0]}]}).encode())
    per_photo = idle_cpu() - before
    # the hang-up
    start_cpu = idle_cpu()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall((f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        time.sleep(after_s)
        at_hangup = cpu_seconds(pid)
    after = idle_cpu() - at_hangup
    metrics = Client(server.port).get("/metrics")[1].decode()
    dropped = re.search(r'edgeclip_dropped_items_total\{tower="vision"\} ([\d.]+)', metrics)
    return {"images": images, "body_mb": round(len(body) / 1e6, 1), "hang_up_after_s": after_s,
            "cpu_s_before_hang_up": round(at_hangup - start_cpu, 2), "cpu_s_after_hang_up": round(after, 2),
            "cpu_s_per_photo_when_waited_for": round(per_photo, 2), "one_photo_status": status,
            "one_photo_seconds": round(seconds, 2), "would_have_cost_cpu_s": round(per_photo * images, 1),
            "dropped_items_metric": float(dropped.group(1)) if dropped else 0.0}


def markdown(edge: dict[str, Any]) -> list[str]:
    base, slow, gone = edge["baseline"], edge["slow_headers"], edge["hung_up"]

    def probes(p: dict[str, Any]) -> str:
        live, query = p["probes"]["live"], p["probes"]["query"]
        above = round(query.get("p99_ms", 0) - base["probes"]["query"].get("p99_ms", 0), 1)
        return (f"/live p99 **{live.get('p99_ms')} ms** (n={live.get('n')}, failures {live['failures']}), "
                f"short query p99 {query.get('p99_ms')} ms = **{above:+} ms** over the baseline (n={query.get('n')}, "
                f"failures {query['failures']})")

    b = base["probes"]
    return [
        "", "## At the network's edge", "",
        f"- baseline, the probes alone for {base['seconds']} s: /live p99 {b['live'].get('p99_ms')} ms, short query "
        f"p50 {b['query'].get('p50_ms')} / p99 {b['query'].get('p99_ms')} ms (n={b['query'].get('n')})",
        *[huge_line(big, base, probes) for big in (edge["huge"], edge["flood"])],
        f"- {slow['connections']} slow-header connections held {slow['seconds']} s (reopened when closed): "
        f"{probes(slow)}; the server closed {slow['closed_by_server']} of them after "
        f"{slow['seconds_kept'].get('p50_ms')} ms p50 (answers {slow['answers']}), open failures {slow['open_failures']}",
        f"- a client that hung up {gone['hang_up_after_s']} s into a {gone['images']}-photo request ({gone['body_mb']} MB): "
        f"**{gone['cpu_s_after_hang_up']} CPU s** spent after it (one photo waited for costs "
        f"{gone['cpu_s_per_photo_when_waited_for']} CPU s; all {gone['images']} ~{gone['would_have_cost_cpu_s']}); "
        f"dropped-items metric {gone['dropped_items_metric']:g}",
    ]


def huge_line(big: dict[str, Any], base: dict[str, Any], probes: Callable[[dict[str, Any]], str]) -> str:
    pace = "back to back (a flood)" if big["pause_s"] == 0 else f"one at a time, {big['pause_s']} s apart"
    return (f"- huge requests {pace} for {big['seconds']} s ({big['requests']} of them, answers {big['statuses']}, p99 "
            f"{big['seconds_to_answer'].get('p99_ms')} ms to the answer): {probes(big)}; server RSS {big['rss_idle_mb']} MB "
            f"idle, peak **+{big['rss_above_idle_mb']} MB**, server CPU {big['server_cpu_s_per_s']} s/s (baseline "
            f"{base['server_cpu_s_per_s']})")
