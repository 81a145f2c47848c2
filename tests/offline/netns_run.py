"""Runs edgeclip's commands inside a loopback-only network namespace and records every way out.

Started by test_offline.py as `unshare -rnm sh -c 'ip link set lo up && mount --bind RESOLV /etc/resolv.conf
&& exec python netns_run.py ...'`: /etc/resolv.conf names a DNS stub on 127.0.0.1:53 (in this script's
thread), which logs every query and answers NXDOMAIN. Each command runs under strace (connect, sendto,
sendmsg, sendmmsg; filtered by seccomp, so cheap), and every socket address it names is recorded. The
report (JSON) lists the DNS queries, the commands with their exit codes, and every address outside
loopback that a command tried to reach.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

EDGECLIP = [sys.executable, "-m", "edgeclip"]  # the installed edgeclip, with this interpreter
ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')


class DnsStub(threading.Thread):
    """A resolver that knows no names: it logs each question and answers NXDOMAIN at once."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.queries: list[dict[str, object]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))

    def run(self) -> None:
        while True:
            data, peer = self.sock.recvfrom(4096)
            if len(data) < 17:
                continue
            i, labels = 12, []
            while i < len(data) and data[i]:
                labels.append(data[i + 1 : i + 1 + data[i]].decode(errors="replace"))
                i += 1 + data[i]
            qtype = struct.unpack(">H", data[i + 1 : i + 3])[0]
            self.queries.append({"time": round(time.time(), 1), "name": ".".join(labels), "type": qtype})
            flags = 0x8000 | (struct.unpack(">H", data[2:4])[0] & 0x0100) | 0x0080 | 3  # response, RD copied, RA, NXDOMAIN
            self.sock.sendto(data[:2] + struct.pack(">HHHHH", flags, 1, 0, 0, 0) + data[12 : i + 5], peer)


def outside_addresses(strace_log: Path) -> list[str]:
    """Every socket address in the log that is not loopback (AF_UNIX and netlink name no address here)."""
    found = []
    for line in strace_log.read_text(errors="replace").splitlines():
        for v4, v6 in ADDRESS.findall(line):
            address = ipaddress.ip_address(v4 or v6)
            mapped = getattr(address, "ipv4_mapped", None)
            if not (address.is_loopback or (mapped is not None and mapped.is_loopback)):
                found.append(line.strip())
    return found


def traced(command: list[str], log: Path) -> list[str]:
    return ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect,sendto,sendmsg,sendmmsg", "-o", str(log), *command]


def serve_under_traffic(bundle: str, work: Path, seconds: float, report: dict[str, list]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    command = [*EDGECLIP, "serve", bundle, "--port", str(port)]
    log = work / "strace-serve.log"
    server = subprocess.Popen(traced(command, log), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{base}/ready", timeout=5).status == 200:
                break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.1)
    started, requests = time.monotonic(), 0
    body = json.dumps({"model": "jina-clip-v2", "input": ["a seal on a rock", "eine Robbe"]}).encode()
    while time.monotonic() - started < seconds:  # bounded: stops by itself after `seconds`
        answer = urllib.request.urlopen(urllib.request.Request(f"{base}/v1/embeddings", body,
                                                               {"content-type": "application/json"}), timeout=30)
        assert answer.status == 200
        requests += 1
        time.sleep(0.2)
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGTERM)  # the server itself, strace's child (strace would not pass it on)
    _, stderr = server.communicate(timeout=60)
    report["commands"].append({"command": " ".join(command), "rc": server.returncode, "requests": requests,
                               "seconds": round(time.monotonic() - started, 1), "stderr": stderr[-2000:]})
    report["outside"].extend(outside_addresses(log))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--serve-seconds", type=float, default=30)
    args = parser.parse_args()
    stub = DnsStub()
    stub.start()
    work, bundle = args.work, args.bundle
    photos = work / "photos"
    report: dict[str, list] = {"commands": [], "outside": []}
    commands = [
        [*EDGECLIP, "embed", bundle, "--text-file", str(work / "texts.txt"), "--image-dir", str(photos), "--out", str(work / "emb.jsonl")],
        [*EDGECLIP, "embed", bundle, "--text-file", str(work / "texts.txt"), "--out", str(work / "emb.parquet")],
        [*EDGECLIP, "index", str(work / "photos.db"), str(photos), "--bundle", bundle],
        [*EDGECLIP, "search", str(work / "photos.db"), "a seal on a rock", "-k", "3"],
        [*EDGECLIP, "embed", bundle, "--providers", "OpenVINO", "--text-file", str(work / "texts.txt"), "--image-dir",
         str(photos), "--out", str(work / "openvino.jsonl")],
    ]
    for n, command in enumerate(commands):
        log = work / f"strace-{n}.log"
        done = subprocess.run(traced(command, log), capture_output=True, text=True, timeout=300)
        report["commands"].append({"command": " ".join(command), "rc": done.returncode, "stderr": done.stderr[-2000:]})
        report["outside"].extend(outside_addresses(log))
    serve_under_traffic(bundle, work, args.serve_seconds, report)
    time.sleep(0.5)
    report["dns_queries"] = list(stub.queries)
    # The control, last: a lookup that must reach the stub, so an empty log means no lookups, not a deaf stub.
    socket.setdefaulttimeout(5)
    try:
        socket.getaddrinfo("control.edgeclip.test", 80)
    except socket.gaierror:
        pass
    time.sleep(0.2)
    report["control_queries"] = [q for q in stub.queries if q["name"] == "control.edgeclip.test"]
    json.dump(report, sys.stdout, indent=1)


if __name__ == "__main__":
    os.environ.pop("http_proxy", None)
    os.environ.pop("HTTP_PROXY", None)
    main()
