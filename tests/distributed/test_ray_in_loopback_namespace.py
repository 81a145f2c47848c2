"""Runs test_distributed.py inside a fresh network namespace with only loopback (`unshare -rn`).

A local Ray cluster's servers (GCS, raylet, workers) listen on the machine's address and on all
interfaces; tests may listen on loopback only. In a namespace whose only interface is `lo`, every
socket Ray opens is a loopback one, and nothing can reach out either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the distributed tests need the ray extra (pip install 'edgeclip[ray]')")
ROOT = Path(__file__).resolve().parents[2]


def test_the_ray_tests_pass_in_a_loopback_only_network_namespace() -> None:
    if os.environ.get("EDGECLIP_LOOPBACK_NETNS") == "1":
        pytest.skip("already inside the namespace")
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        reason = "unshare is missing" if probe is None else f"unshare -rn failed: {probe.stderr.strip()}"
        if os.environ.get("EDGECLIP_REQUIRE_RAY") == "1":
            pytest.fail(f"the Ray tests need a loopback-only network namespace: {reason}")
        pytest.skip(f"no loopback-only network namespace here ({reason})")
    inner = f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider tests/distributed/test_distributed.py"
    done = subprocess.run(["unshare", "-rn", "sh", "-c", inner], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "EDGECLIP_LOOPBACK_NETNS": "1"})
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, f"{summary}\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    assert " passed" in summary and "skipped" not in summary, summary  # every inner test ran
