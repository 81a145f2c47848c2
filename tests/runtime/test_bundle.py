"""Reading a bundle: schema, path safety, presence/size/hash checks, the session's I/O contract."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeclip.bundle import Bundle, Manifest, check_relative_path
from edgeclip.errors import BundleError
from edgeclip.session import TowerSession, check_providers


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def _edit_manifest(bundle: Path, edit) -> None:  # noqa: ANN001
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_manifest_round_trips(tiny_bundle: Path) -> None:
    text = (tiny_bundle / "manifest.json").read_text()
    manifest = Manifest.from_json(text)
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert json.loads(manifest.to_json()) == json.loads(text)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.onnx", "a/../../b", "C:/x.onnx", "a\\b.onnx", ""])
def test_paths_that_leave_the_bundle_are_refused(path: str) -> None:
    with pytest.raises(BundleError, match="absolute or leaves the bundle"):
        check_relative_path(path)


def test_manifest_with_escaping_path_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    _edit_manifest(bundle, lambda m: m["text"]["variants"]["fp32"]["files"][0].update(path="../../etc/passwd"))
    with pytest.raises(BundleError, match="leaves the bundle"):
        Bundle.open(bundle)


def test_symlink_out_of_the_bundle_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    outside = tmp_path / "outside.onnx"
    shutil.move(bundle / "text.fp32.onnx", outside)
    (bundle / "text.fp32.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="resolves outside the bundle"):
        TowerSession(Bundle.open(bundle), "text", "fp32")


def test_unknown_schema_version(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    _edit_manifest(bundle, lambda m: m.update(schema_version=99))
    with pytest.raises(BundleError, match="schema_version 99 is not supported.*upgrade edgeclip"):
        Bundle.open(bundle)


def test_missing_field_names_the_field(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    _edit_manifest(bundle, lambda m: m["vision"].pop("mean"))
    with pytest.raises(BundleError, match=r"manifest.vision: missing mean"):
        Bundle.open(bundle)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        Bundle.open(tmp_path / "nothing")
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.open(tmp_path)


def test_missing_tower_and_variant(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle_dir = _copy(tiny_bundle, tmp_path)
    _edit_manifest(bundle_dir, lambda m: m.update(vision=None))
    bundle = Bundle.open(bundle_dir)
    with pytest.raises(BundleError, match="no vision tower; rebuild it with --towers text,vision"):
        bundle.variant("vision", "fp32")
    with pytest.raises(BundleError, match="no variant 'int8'; available: fp32"):
        bundle.variant("text", "int8")


def test_missing_truncated_and_tampered_files(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle_dir = _copy(tiny_bundle, tmp_path)
    bundle = Bundle.open(bundle_dir)
    (bundle_dir / "vision.fp32.onnx").unlink()
    with pytest.raises(BundleError, match="vision.fp32.onnx: missing"):
        TowerSession(bundle, "vision", "fp32")
    graph = bundle_dir / "text.fp32.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes: only the hash sees it
    graph.write_bytes(bytes(data))
    files = bundle.variant("text", "fp32").files
    bundle.check_files(files)  # presence and size are fine
    with pytest.raises(BundleError, match="sha256 differs"):
        bundle.check_files(files, verify_hash=True)
    graph.write_bytes(bytes(data[:-10]))
    with pytest.raises(BundleError, match="bytes, manifest says"):
        TowerSession(bundle, "text", "fp32")


def test_session_contract_is_checked_at_load(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle_dir = _copy(tiny_bundle, tmp_path)
    _edit_manifest(bundle_dir, lambda m: m["text"]["variants"]["fp32"]["inputs"][1].update(name="mask"))
    with pytest.raises(BundleError, match="inputs are .*attention_mask.*the manifest says.*mask"):
        TowerSession(Bundle.open(bundle_dir), "text", "fp32")


def test_session_casts_feeds_and_names_outputs(tiny_bundle: Path) -> None:
    session = TowerSession(Bundle.open(tiny_bundle), "text", "fp32", threads=1)
    ids = [[0, 10, 11, 2]]
    out = session.run({"input_ids": np.array(ids, dtype=np.int32), "attention_mask": np.ones((1, 4), dtype=bool)})
    assert list(out) == ["text_embeds"] and out["text_embeds"].dtype == np.float32


def test_unavailable_provider_is_named() -> None:
    with pytest.raises(BundleError, match="NoSuchExecutionProvider not available.*available: .*CPUExecutionProvider"):
        check_providers(["NoSuchExecutionProvider"])
    assert check_providers(None) == ["CPUExecutionProvider"]


def test_runtime_never_imports_torch_or_the_server_stack() -> None:
    heavy = ("torch", "onnx", "safetensors", "transformers", "fastapi", "uvicorn", "starlette", "pydantic", "prometheus_client",
             "ray", "openvino", "pyarrow")
    code = ("import sys, edgeclip, edgeclip.session, edgeclip.bundle, edgeclip.cli, edgeclip.machine, edgeclip.benchmark; "
            f"bad = [m for m in {heavy!r} if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
