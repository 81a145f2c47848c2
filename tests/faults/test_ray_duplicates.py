"""Ray outputs never keep an id twice (issue 25): a run killed after writing the new rows of changed inputs
but before dropping their old ones leaves both; the next open drops the older rows before anything else,
whatever was killed when. Built from shards written as the actors write them (no Ray needed here; the
Ray tests in tests/distributed run the whole job in a loopback-only namespace)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pytest.importorskip("pyarrow.parquet")

from edgeclip import distributed  # noqa: E402
from edgeclip.jobs import OutputSettings, RowBatch  # noqa: E402
from edgeclip.jobs.parquet_sink import parquet_bytes, parquet_table  # noqa: E402

SETTINGS = OutputSettings(bundle_sha256="x", model="m", variants={"text": "int8"}, dim=4, precision="float32", task=None,
                          max_length=512, exif_transpose=True)


def shard(out: Path, number: int, ids: list[str], version: str) -> None:
    vectors = np.full((len(ids), 4), float(len(version)), np.float32)
    table = parquet_table(pa, SETTINGS, [RowBatch(ids, ["text"] * len(ids), [f"{version}:{i}" for i in ids], vectors)])
    distributed.write_shard(out / distributed.shard_name(number), parquet_bytes(pa, table))


def all_ids(out: Path) -> list[str]:
    return [i for p in sorted(out.glob("part-*.parquet")) for i in pa.parquet.read_table(p).column("id").to_pylist()]


def test_older_rows_of_ids_in_newer_shards_are_dropped_on_open(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    out.mkdir()
    ids = [f"t{i}" for i in range(12)]
    for n in range(3):  # the first run: 3 shards of 4
        shard(out, n, ids[4 * n:4 * n + 4], "old")
    shard(out, 3, ids[0:4], "new!")  # the rerun after every text changed, killed after two of its shards
    shard(out, 4, ids[4:8], "new!")
    shard(out, 5, ids[10:12] + ids[10:11], "new!")  # and one id twice within a shard
    assert len(all_ids(out)) == 12 + 11
    twice, dropped = distributed.deduplicate(out, SETTINGS)
    assert twice == 10 and dropped == 11
    stored = all_ids(out)
    assert sorted(stored) == sorted(ids) and len(stored) == len(set(stored))  # every id once
    newest = distributed.read_shards(out)
    assert {i for i, (fp, _) in newest.items() if fp.startswith("new!")} == set(ids[:8] + ids[10:])
    assert not (out / distributed.shard_name(0)).exists()  # a shard left empty is deleted
    assert distributed.deduplicate(out, SETTINGS) == (0, 0)  # idempotent: a kill during it is finished next time


def test_embed_check_repairs_a_folder_and_a_file(tmp_path: Path) -> None:
    import json

    from edgeclip.cli import main

    out = tmp_path / "emb"
    out.mkdir()
    distributed.settings_file(out).write_text(json.dumps(SETTINGS.to_dict()), encoding="utf-8")
    shard(out, 0, ["a", "b"], "old")
    shard(out, 1, ["a"], "new!")
    assert main(["embed", "unused-bundle", "--out", f"{out}/", "--engine", "ray", "--check"]) == 0
    assert sorted(all_ids(out)) == ["a", "b"]
    # a .jsonl a killed job left with a superseded row (rows are compacted when a job closes)
    jsonl = tmp_path / "out.jsonl"
    rows = [{"id": "a", "kind": "text", "dim": 4, "fingerprint": v, "embedding": [0.5] * 4} for v in ("old", "new")]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    jsonl.with_name("out.jsonl.meta.json").write_text(json.dumps(SETTINGS.to_dict()), encoding="utf-8")
    assert main(["embed", "unused-bundle", "--out", str(jsonl), "--check"]) == 0
    assert [json.loads(line)["fingerprint"] for line in jsonl.read_text(encoding="utf-8").splitlines()] == ["new"]
