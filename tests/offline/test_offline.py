"""Offline by default, proven: edgeclip's commands in a loopback-only network namespace make no DNS lookup
and try no address outside loopback.

Inside `unshare -rnm`, /etc/resolv.conf is bound to a file naming a logging DNS stub on 127.0.0.1, and each
command runs under strace (netns_run.py): an embed job (JSONL and parquet), an index build, a search, the
OpenVINO path, and the server under traffic for 30 s (onnxruntime 1.32 looked its telemetry host up every
6-8 s once a session existed, before edgeclip set ORT_DISABLE_TELEMETRY). A control lookup at the end
must reach the stub, so an empty log cannot come from a deaf stub. Skipped where unshare or strace is
missing, unless EDGECLIP_REQUIRE_OFFLINE=1 (CI sets it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skips import need

HERE = Path(__file__).resolve().parent



@pytest.fixture(scope="module")
def offline_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from converters.build import BuildOptions, build_bundle

    out = tmp_path_factory.mktemp("offline") / "bundle"
    build_bundle(str(tiny_checkpoint), out, BuildOptions(variants=("fp32", "int8", "int8-vnni", "fp32-portable")))
    return out


def test_no_lookup_and_no_connection_leaves_loopback(offline_bundle: Path, tmp_path: Path) -> None:
    for tool in ("unshare", "strace", "ip"):
        if shutil.which(tool) is None:
            need("EDGECLIP_REQUIRE_OFFLINE", f"{tool} is missing (apt install util-linux strace iproute2)")
    for module in ("pyarrow", "openvino", "fastapi"):
        if __import__("importlib").util.find_spec(module) is None:
            need("EDGECLIP_REQUIRE_OFFLINE", f"{module} is missing (the test extra brings it)")
    probe = subprocess.run(["unshare", "-rnm", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        need("EDGECLIP_REQUIRE_OFFLINE", f"no network and mount namespace here: {probe.stderr.strip()}")
    (tmp_path / "photos").mkdir()
    for i in range(3):
        ramp = (np.add.outer(np.arange(60), np.arange(80))[..., None] * (i + 1)) % 256
        Image.fromarray(np.repeat(ramp, 3, axis=2).astype(np.uint8)).save(tmp_path / "photos" / f"p{i}.png")
    (tmp_path / "photos" / "note.md").write_text("The seal sleeps on the rock.", encoding="utf-8")
    (tmp_path / "texts.txt").write_text("a seal on a rock\nuna foca en una roca\n", encoding="utf-8")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    inner = (f"ip link set lo up && mount --bind {resolv} /etc/resolv.conf && "
             f"exec {sys.executable} {HERE / 'netns_run.py'} --bundle {offline_bundle} --work {tmp_path} --serve-seconds 30")
    # As a user's machine: edgeclip must set ORT_DISABLE_TELEMETRY itself, and CI=true (which OpenVINO's
    # telemetry honours) must not hide a lookup that a user's machine would make.
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "CI", "TF_BUILD", "JENKINS_URL")}
    done = subprocess.run(["unshare", "-rnm", "sh", "-c", inner], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    (tmp_path / "report.json").write_text(done.stdout)
    failed = [c for c in report["commands"] if c["rc"] != 0]
    assert not failed, failed
    assert report["commands"][-1]["seconds"] >= 30 and report["commands"][-1]["requests"] > 10
    assert len(report["control_queries"]) >= 1, "the DNS stub heard nothing: the test could not see a lookup"
    assert report["dns_queries"] == [], report["dns_queries"]
    assert report["outside"] == [], report["outside"]
    print(f"{len(report['commands'])} commands, 0 DNS queries, 0 addresses outside loopback:",
          *(c["command"] for c in report["commands"]), sep="\n  ")
