"""`edgeclip pull` and `load("hf:...")` against a local HTTP server that answers as the Hugging Face Hub does.

The server implements the one route huggingface_hub's hf_hub_download uses:
HEAD/GET /{owner}/{name}/resolve/{revision}/{path}, with X-Repo-Commit, ETag and Content-Length, and
404s carrying X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound). Everything goes through
the real huggingface_hub client and its cache layout (HF_HOME in a temp folder), in subprocesses
with HF_ENDPOINT pointed at the server, as a user's shell would set it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import edgeclip
from fakehub import COMMIT, FakeHub

REPO = "edgeclip-test/tiny-bundle"


@pytest.fixture()
def hub(tiny_bundle: Path) -> Iterator[FakeHub]:
    files = {str(p.relative_to(tiny_bundle)): p.read_bytes() for p in tiny_bundle.rglob("*") if p.is_file()}
    server = FakeHub(files, REPO)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def _env(hub: FakeHub, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    return {**env, "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_address[1]}", "HF_HOME": str(home / "hf"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "5", "EDGECLIP_CACHE": str(home / "edgeclip"),
            "NO_PROXY": "127.0.0.1", **extra}


def _pull(hub: FakeHub, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeclip", "pull", *args], capture_output=True, text=True, timeout=120,
                          env=_env(hub, home, **env))


def _fetched(hub: FakeHub) -> set[str]:
    return {path.split("/resolve/")[1].split("/", 1)[1] for method, path in hub.requests if method == "GET"}


def test_a_text_only_pull_fetches_no_vision_file(hub: FakeHub, tiny_bundle: Path, tmp_path: Path) -> None:
    done = _pull(hub, tmp_path, REPO, "--out", str(tmp_path / "b"), "--towers", "text")
    assert done.returncode == 0, done.stderr
    fetched = _fetched(hub)
    assert fetched == {"manifest.json", "tokenizer.json", "text.fp32.onnx", "text.fp32.onnx.data"}, fetched
    assert not any(name.startswith("vision") for name in fetched)
    pulled = edgeclip.load(tmp_path / "b")
    texts = ["a seal on a rock", "foca en una roca"]
    np.testing.assert_array_equal(pulled.encode_text(texts), edgeclip.load(tiny_bundle).encode_text(texts))
    assert (tmp_path / "b" / "manifest.json").read_bytes() == (tiny_bundle / "manifest.json").read_bytes()  # same checksum
    with pytest.raises(edgeclip.BundleError, match="(?s)pulled without these files.*edgeclip pull"):
        pulled.encode_image([np.zeros((8, 8, 3), np.uint8)])


def test_offline_mode_pulls_from_the_cache_and_names_what_is_missing(hub: FakeHub, tmp_path: Path) -> None:
    assert _pull(hub, tmp_path, f"{REPO}@{COMMIT}", "--out", str(tmp_path / "a"), "--towers", "text").returncode == 0
    hub.requests.clear()
    again = _pull(hub, tmp_path, f"{REPO}@{COMMIT}", "--out", str(tmp_path / "again"), "--towers", "text", HF_HUB_OFFLINE="1")
    assert again.returncode == 0, again.stderr
    assert hub.requests == []  # nothing asked of the server
    missing = _pull(hub, tmp_path, f"{REPO}@{COMMIT}", "--out", str(tmp_path / "v"), "--towers", "vision", HF_HUB_OFFLINE="1")
    assert missing.returncode == 2 and "HF_HUB_OFFLINE is set and it is not in the cache" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["nobody/nothing"], "no repository 'nobody/nothing'"),
    ([f"{REPO}@v9"], "has no revision 'v9'"),
    ([REPO, "--variant", "int3"], "has no variant 'int3'"),
    (["not-a-ref"], "is not a hub bundle reference"),
])
def test_clear_errors(hub: FakeHub, tmp_path: Path, args: list[str], message: str) -> None:
    done = _pull(hub, tmp_path, *args, "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_tampered_file_is_refused_and_never_placed(hub: FakeHub, tmp_path: Path) -> None:
    original = hub.files["tokenizer.json"]
    hub.files["tokenizer.json"] = original.replace(b"<unk>", b"<UNK>", 1)  # same size, other bytes
    done = _pull(hub, tmp_path, REPO, "--out", str(tmp_path / "t"), "--towers", "text")
    assert done.returncode == 2 and "sha256 differs from the manifest" in done.stderr, done.stderr
    assert not (tmp_path / "t" / "tokenizer.json").exists()


def test_load_hf_reference_downloads_into_the_cache(hub: FakeHub, tiny_bundle: Path, tmp_path: Path) -> None:
    code = (f"import edgeclip, numpy; m = edgeclip.load('hf:{REPO}'); "
            "print(numpy.asarray(m.encode_text(['a seal'])).tolist()); print(m.bundle.directory)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env(hub, tmp_path))
    assert done.returncode == 0, done.stderr
    row, directory = done.stdout.strip().splitlines()
    np.testing.assert_array_equal(np.array(json.loads(row)), edgeclip.load(tiny_bundle).encode_text(["a seal"]))
    assert directory.startswith(str(tmp_path / "edgeclip")) and COMMIT in directory


def test_a_pulled_variant_brings_the_weights_file_it_shares(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """int8-vnni-attn reads int8-vnni's weights file: pulling it alone fetches that file once, and it runs."""
    from converters.build import BuildOptions, build_bundle

    source = build_bundle(str(tiny_checkpoint), tmp_path / "src", BuildOptions(towers=("vision",), variants=("int8-vnni", "int8-vnni-attn")))
    files = {str(p.relative_to(source.directory)): p.read_bytes() for p in source.directory.rglob("*") if p.is_file()}
    server = FakeHub(files, REPO)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = _pull(server, tmp_path, REPO, "--out", str(tmp_path / "b"), "--towers", "vision", "--variant", "int8-vnni-attn")
        assert done.returncode == 0, done.stderr
        gets = [path.split("/resolve/")[1].split("/", 1)[1] for method, path in server.requests if method == "GET"]
    finally:
        server.shutdown()
    assert sorted(gets) == ["manifest.json", "vision.int8-vnni-attn.onnx", "vision.int8-vnni.onnx.data"], gets
    image = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a CPU without int8 dot products warns about the variant
        pulled = edgeclip.load(tmp_path / "b", variant="int8-vnni-attn").encode_image([image])
        np.testing.assert_array_equal(pulled, edgeclip.load(source.directory, variant="int8-vnni-attn").encode_image([image]))
