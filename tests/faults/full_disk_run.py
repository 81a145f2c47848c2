"""Run inside a mount namespace whose OUT folder is a small tmpfs (tests/faults/test_full_disk.py):
embed until the disk fills, look at what is left, free the space, rerun, and print a JSON report."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgeclip.jobs.sinks import read_rows

bundle, inputs, out_dir, suffix, free_kb = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
filler = out_dir / "filler"
total = os.statvfs(out_dir).f_bavail * os.statvfs(out_dir).f_frsize
filler.write_bytes(b"\0" * max(0, total - free_kb * 1024))
if suffix == ".db":  # an index of the folder `inputs`
    out = out_dir / "photos.db"
    command = [sys.executable, "-m", "edgeclip", "index", str(out), inputs, "--bundle", bundle, "--quiet"]
else:
    out = out_dir / f"out{suffix}"
    command = [sys.executable, "-m", "edgeclip", "embed", bundle, "--jsonl", inputs, "--out", str(out), "--quiet"]
first = subprocess.run(command, capture_output=True, text=True)
left = sorted(p.name for p in out_dir.rglob("*") if p.name != "filler")
torn = None
if out.exists() and suffix == ".jsonl":
    data = out.read_bytes()
    torn = bool(data) and not data.endswith(b"\n")
    [json.loads(line) for line in data.splitlines()]  # every line whole
if out.exists() and suffix == ".npy":
    ids, vectors = read_rows(out)
    torn = len(ids) != len(vectors)
if out.exists() and suffix == ".db":
    with sqlite3.connect(out) as db:
        torn = db.execute("PRAGMA integrity_check").fetchone()[0] != "ok"
filler.unlink()
second = subprocess.run(command, capture_output=True, text=True)
if suffix == ".db":
    with sqlite3.connect(out) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM items")]
    vectors = np.zeros((1, 1))
    expected = [str(p) for p in Path(inputs).iterdir()]
else:
    ids, vectors = read_rows(out)
    expected = [json.loads(line)["id"] for line in Path(inputs).read_text(encoding="utf-8").splitlines()]
print(json.dumps({"first_rc": first.returncode, "first_stderr": first.stderr, "left": left, "torn": torn,
                  "second_rc": second.returncode, "second_stderr": second.stderr[-2000:],
                  "ids_once": sorted(ids) == sorted(expected) and len(set(ids)) == len(ids),
                  "rows_finite": bool(np.isfinite(np.asarray(vectors, dtype=np.float64)).all())}))
