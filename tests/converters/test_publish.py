"""`python -m converters publish`: the generated model card, and the one commit it makes (against a stand-in HfApi)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("huggingface_hub")
from converters.errors import ConverterError  # noqa: E402
from converters.publish import RANDOM_WARNING, model_card, publish  # noqa: E402
from edgeclip.bundle import Bundle  # noqa: E402


class RecordingApi:
    """Stands in for HfApi: records what publish asks of the hub (the real upload protocol is not exercised)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def create_repo(self, repo: str, **kwargs: Any) -> None:
        self.calls.append(("create_repo", (repo, kwargs)))

    def create_commit(self, repo: str, operations: list[Any], commit_message: str) -> Any:
        self.calls.append(("create_commit", (repo, operations, commit_message)))
        return type("Info", (), {"commit_url": f"https://hub.example/{repo}/commit/1"})()


def test_the_model_card_carries_licence_variants_and_the_random_warning(tiny_bundle: Path) -> None:
    bundle = Bundle.open(tiny_bundle)
    card = model_card(bundle, "me/tiny")
    assert RANDOM_WARNING in card  # random weights: loud
    assert bundle.manifest.license.spdx in card and bundle.manifest.license.url in card
    for tower in ("text", "vision"):
        for name, variant in getattr(bundle.manifest, tower).variants.items():
            size = sum(f.size for f in variant.files) / 1e6
            assert f"| {tower} | `{name}` | {variant.precision} | {size:.1f} MB |" in card
    assert "edgeclip pull me/tiny" in card and 'edgeclip.load("hf:me/tiny")' in card


def test_a_real_weights_card_has_no_warning_and_says_the_licence(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    raw["source"].update(model_id="jinaai/jina-clip-v2", revision="abc123", random_weights=False)
    raw["license"] = {"spdx": "CC-BY-NC-4.0", "url": "https://creativecommons.org/licenses/by-nc/4.0/", "note": "non-commercial"}
    (copy / "manifest.json").write_text(json.dumps(raw))
    card = model_card(Bundle.open(copy), "me/clip")
    assert RANDOM_WARNING not in card and "license: cc-by-nc-4.0" in card
    assert "**jinaai/jina-clip-v2** at revision `abc123`" in card and "CC-BY-NC-4.0" in card


def test_publish_uploads_every_listed_file_the_manifest_and_the_card_in_one_commit(tiny_bundle: Path) -> None:
    api = RecordingApi()
    url = publish(tiny_bundle, "me/tiny", api=api)
    assert url.endswith("/commit/1") and [c[0] for c in api.calls] == ["create_repo", "create_commit"]
    repo, operations, _ = api.calls[1][1]
    paths = {op.path_in_repo for op in operations}
    listed = {f.path for f in Bundle.open(tiny_bundle).all_files()}
    assert paths == listed | {"manifest.json", "README.md"}


def test_publish_refuses_a_damaged_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    data = copy / "tokenizer.json"
    data.write_bytes(data.read_bytes().replace(b"<unk>", b"<UNK>", 1))
    api = RecordingApi()
    with pytest.raises(Exception, match="sha256 differs"):
        publish(copy, "me/tiny", api=api)
    assert api.calls == []  # nothing was sent


def test_a_hub_failure_is_a_converter_error(tiny_bundle: Path) -> None:
    class Refusing(RecordingApi):
        def create_repo(self, repo: str, **kwargs: Any) -> None:
            raise RuntimeError("401 Unauthorized")

    with pytest.raises(ConverterError, match="publishing to me/tiny failed: 401 Unauthorized"):
        publish(tiny_bundle, "me/tiny", api=Refusing())


def test_publish_of_a_missing_bundle_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from converters.__main__ import main as converters_main

    assert converters_main(["publish", str(tmp_path / "nope"), "--repo", "me/x"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
