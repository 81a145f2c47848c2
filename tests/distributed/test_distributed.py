"""edgeclip on Ray Data: a local Ray cluster, the tiny bundle, against a local `edgeclip embed` of the same inputs.

Ray's servers listen on the machine's address, not only on loopback, so these tests run inside a
network namespace that has nothing but loopback: test_ray_in_loopback_namespace.py starts them there
(EDGECLIP_LOOPBACK_NETNS=1); run directly, they skip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(os.environ.get("EDGECLIP_LOOPBACK_NETNS") != "1",
                                reason="runs inside a loopback-only network namespace (test_ray_in_loopback_namespace.py)")
ray = pytest.importorskip("ray", reason="the distributed tests need the ray extra (pip install 'edgeclip[ray]')")
pa_parquet = pytest.importorskip("pyarrow.parquet")
pa_dataset = pytest.importorskip("pyarrow.dataset")
import psutil  # noqa: E402

import edgeclip  # noqa: E402
from edgeclip import distributed  # noqa: E402
from edgeclip.cli import main as cli_main  # noqa: E402


@pytest.fixture(scope="module")
def local_ray() -> object:
    ray.init(num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for n in range(10):
        pixels = rng.integers(0, 255, (40 + 7 * n, 60 + 5 * n, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{n:02d}.{'png' if n % 2 else 'jpg'}")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def _rows(paths: list[Path]) -> dict[str, np.ndarray]:
    rows: dict[str, np.ndarray] = {}
    for path in paths:
        table = pa_parquet.read_table(path)
        for item_id, vector in zip(table.column("id").to_pylist(), table.column("embedding").to_pylist()):
            assert item_id not in rows, f"{item_id} twice"
            rows[item_id] = np.asarray(vector, np.float32)
    return rows


def _read_folder_with_every_reader(folder: Path, tmp_path: Path) -> dict[str, list[str]]:
    """The shard folder, read as a dataset by each reader people use, without options: each must see the
    same ids. The folder holds the shards and nothing else: Polars refuses a folder with any other file."""
    assert {p.name for p in folder.iterdir()} == {p.name for p in folder.glob("part-*.parquet")}
    expected = sorted(_rows(sorted(folder.glob("part-*.parquet"))))
    seen: dict[str, list[str]] = {
        "pyarrow.parquet.read_table": pa_parquet.read_table(folder).column("id").to_pylist(),
        "pyarrow.dataset": pa_dataset.dataset(folder).to_table().column("id").to_pylist(),
    }
    readers = {
        "pandas": lambda: __import__("pandas").read_parquet(folder)["id"].tolist(),
        "duckdb glob": lambda: [r[0] for r in __import__("duckdb").sql(f"SELECT id FROM read_parquet('{folder}/*.parquet')").fetchall()],
        "duckdb folder": lambda: [r[0] for r in __import__("duckdb").sql(f"SELECT id FROM read_parquet('{folder}')").fetchall()],
        "polars": lambda: __import__("polars").read_parquet(folder)["id"].to_list(),
        "lancedb": lambda: __import__("lancedb").connect(tmp_path / "lance").create_table(
            "photos", pa_dataset.dataset(folder)).to_arrow().column("id").to_pylist(),
    }
    for name, read in readers.items():
        if importlib.util.find_spec(name.split()[0]) is not None:
            seen[name] = read()
    for name, ids in seen.items():
        assert sorted(ids) == expected, name
    return seen


def test_a_folder_from_before_gets_its_side_files_out(tmp_path: Path) -> None:
    """Folders written before 0.1.1 held _edgeclip.json and failures.jsonl: the next run moves the settings
    beside the folder and removes the rest, so the folder becomes a plain dataset."""
    out = tmp_path / "emb"
    out.mkdir()
    settings = distributed.OutputSettings(bundle_sha256="abc", model="m", variants={"text": "int8"}, dim=64,
                                          precision="float32", task=None, max_length=512, exif_transpose=True)
    (out / "_edgeclip.json").write_text(json.dumps(settings.to_dict()))
    (out / "failures.jsonl").write_text("")
    (out / "_edgeclip.json.lock").write_text("")
    distributed.check_output_dir(out, settings, overwrite=False)
    assert list(out.iterdir()) == []
    assert json.loads((tmp_path / "emb.meta.json").read_text()) == settings.to_dict()


def test_ray_shards_equal_a_local_embed(local_ray: object, tiny_bundle: Path, photos: Path, tmp_path: Path) -> None:
    local, shards = tmp_path / "local.parquet", tmp_path / "ray"
    assert cli_main(["embed", str(tiny_bundle), "--image-dir", str(photos), "--out", str(local), "--quiet"]) == 1  # broken.jpg
    code = cli_main(["embed", str(tiny_bundle), "--image-dir", str(photos), "--out", f"{shards}/", "--engine", "ray",
                     "--workers", "2", "--cpus-per-worker", "1", "--shard-rows", "3"])
    assert code == 1  # the bad input is reported, the others are written
    ours, theirs = _rows(sorted(shards.glob("part-*.parquet"))), _rows([local])
    assert set(ours) == set(theirs) and len(ours) == 10
    for item_id, vector in theirs.items():
        np.testing.assert_allclose(ours[item_id], vector, atol=1e-6)
    failures = [json.loads(line) for line in (tmp_path / "ray.failures.jsonl").read_text().splitlines()]
    assert (tmp_path / "ray.meta.json").is_file()
    assert [f["id"] for f in failures] == [str(photos / "broken.jpg")] and failures[0]["reason"]
    assert set(_read_folder_with_every_reader(shards, tmp_path)) == {"pyarrow.parquet.read_table", "pyarrow.dataset",
                                                                      "pandas", "duckdb glob", "duckdb folder", "polars",
                                                                      "lancedb"}
    # The same schema and metadata as a local .parquet output.
    assert pa_parquet.read_schema(next(shards.glob("part-*.parquet"))) == pa_parquet.read_schema(local)

    # A rerun skips every shard already written: nothing is embedded or rewritten.
    before = {p: p.stat().st_mtime_ns for p in shards.glob("part-*.parquet")}
    assert cli_main(["embed", str(tiny_bundle), "--image-dir", str(photos), "--out", f"{shards}/", "--engine", "ray"]) == 1
    assert {p: p.stat().st_mtime_ns for p in shards.glob("part-*.parquet")} == before

    # A changed input is embedded again into a new shard, and its old row is dropped.
    changed = photos / "p03.png"
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(changed)
    assert cli_main(["embed", str(tiny_bundle), "--image-dir", str(photos), "--out", f"{shards}/", "--engine", "ray"]) == 1
    after = _rows(sorted(shards.glob("part-*.parquet")))
    assert set(after) == set(ours)
    fresh = edgeclip.load(tiny_bundle).encode_image([changed])[0]
    np.testing.assert_allclose(after[str(changed)], fresh, atol=1e-6)


def test_texts_and_bad_rows_through_the_dataset_helpers(local_ray: object, tiny_bundle: Path) -> None:
    texts = ["a seal on a rock", "foca en una roca", "岩の上のアザラシ", ""]
    ds = distributed.embed_texts(texts, tiny_bundle, batch_size=2, workers=1)
    rows = sorted(ds.take_all(), key=lambda r: int(r["id"]))
    expected = edgeclip.load(tiny_bundle).encode_text(texts)
    np.testing.assert_allclose(np.stack([r["embedding"] for r in rows]), expected, atol=1e-6)
    assert [r["error"] for r in rows] == ["", "", "", ""] and {r["kind"] for r in rows} == {"text"}

    good = Image.new("RGB", (30, 20), (200, 10, 10))
    import io

    buffer = io.BytesIO()
    good.save(buffer, format="PNG")
    images = ray.data.from_items([{"id": "good", "bytes": buffer.getvalue()}, {"id": "bad", "bytes": b"nope"}])
    out = {r["id"]: r for r in distributed.embed_images(images, tiny_bundle, batch_size=2).take_all()}
    assert out["good"]["error"] == "" and out["bad"]["error"]  # one bad row, not a failed job
    np.testing.assert_allclose(out["good"]["embedding"], edgeclip.load(tiny_bundle).encode_image([good])[0], atol=1e-6)


class SlowShardWriter(distributed.ShardWriter):
    """Holds each shard for a while, so a worker can be killed in the middle of the job."""

    def __call__(self, batch: dict) -> dict:  # type: ignore[override]
        time.sleep(0.4)
        return distributed.ShardWriter.__call__(self, batch)  # not super(): the class travels by value


def _actor_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "SlowShardWriter" in cmdline and process.pid != os.getpid():
            found.append(process)
    return found


def test_a_worker_killed_mid_job_still_yields_every_id_once(local_ray: object, tiny_bundle: Path, photos: Path,
                                                            tmp_path: Path) -> None:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    items = [edgeclip.jobs.Item(f"t{n}", "text", f"text number {n}", f"sha1:{n}") for n in range(24)]
    model = edgeclip.load(tiny_bundle)
    settings = edgeclip.jobs.OutputSettings("x", "m", {"text": model.variant_name("text")}, model.output_dim("text"),
                                            "float32", None, 512, True)
    out = tmp_path / "killed"
    config = distributed.EmbedConfig(str(tiny_bundle))
    outcome: dict = {}
    job = threading.Thread(target=lambda: outcome.update(summary=distributed.run_shards(
        iter(items), out, config, settings, workers=2, cpus_per_worker=1, shard_rows=2, writer=SlowShardWriter)))
    job.start()
    deadline = time.monotonic() + 120
    while not list(out.glob("part-*.parquet")):  # the job is under way: a shard is written, most are not
        assert time.monotonic() < deadline and job.is_alive(), "no shard was written"
        time.sleep(0.02)
    victims = _actor_processes()
    assert victims and job.is_alive()
    victims[0].send_signal(signal.SIGKILL)
    written_when_killed = len(list(out.glob("part-*.parquet")))
    job.join(180)
    assert not job.is_alive() and written_when_killed < 12  # the kill landed mid-job
    summary = outcome["summary"]
    assert summary.texts == 24 and not summary.failures
    rows = _rows(sorted(out.glob("part-*.parquet")))  # _rows fails on an id seen twice
    assert set(rows) == {i.id for i in items}


def test_a_local_rays_processes_end_with_a_killed_driver(tmp_path: Path) -> None:
    """kill -9 of the driver: the Ray processes it started end within seconds (they lived on >= 60 s)."""
    import subprocess

    code = ("from edgeclip.distributed import start_ray; start_ray(); import ray; "
            "print(ray._private.worker._global_node.get_session_dir_path(), flush=True); import time; time.sleep(600)")
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert driver.stdout is not None
    session = os.path.basename(driver.stdout.readline().strip())
    assert session.startswith("session_")

    def of_session() -> list[int]:
        return [p.pid for p in psutil.process_iter(["cmdline"]) if any(session in part for part in p.info["cmdline"] or ())]

    assert of_session()  # raylet, gcs_server, the agents
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 30
    while of_session() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert of_session() == []
