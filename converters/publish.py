"""`python -m converters publish BUNDLE --repo owner/name`: upload a bundle to the Hugging Face Hub with a model card.

One commit holds every file the manifest lists, the manifest itself and a generated README.md: the
source model and revision, the weights' licence (carried from the manifest), the variants with their
sizes and gate figures, how to pull it, and a loud warning on random-weight bundles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeclip.bundle import MANIFEST_FILE, Bundle

from .errors import ConverterError

RANDOM_WARNING = ("> **WARNING: RANDOM WEIGHTS.** This bundle was built from a random checkpoint (`make-checkpoint`). "
                  "Its embeddings mean nothing: it exists for tests and speed measurements only.")


def _gate_line(variant: Any) -> str:
    gate = variant.validation.get("gate")
    if not gate:
        cases = variant.validation.get("reference", {})
        worst = min((c["min_cosine"] for c in cases.values()), default=None)
        return f"not gated; worst cosine to the reference {worst:.5f}" if worst is not None else "not validated"
    verdict = "passed" if gate.get("passed") else "FAILED"
    return f"gate {verdict}: cosine mean {gate['cosine_mean']:.5f}, worst 1 % {gate['cosine_p1']:.5f}"


def model_card(bundle: Bundle, repo: str) -> str:
    m = bundle.manifest
    spdx = m.license.spdx
    lines = ["---", f"license: {spdx.lower() if spdx != 'CC-BY-NC-4.0' else 'cc-by-nc-4.0'}", "library_name: edgeclip",
             "tags: [edgeclip, onnx, clip, multilingual, embeddings]", "---", "",
             f"# {repo}", ""]
    if m.source.random_weights:
        lines += [RANDOM_WARNING, ""]
    lines += [f"An [edgeclip](https://github.com/) bundle of **{m.source.model_id}**"
              + (f" at revision `{m.source.revision}`" if m.source.revision else "")
              + ": ONNX graphs for CPU inference with ONNX Runtime, no torch needed.", "",
              "## Licence", "", f"The weights' licence applies to this bundle: **{spdx}** ({m.license.url}). {m.license.note}", "",
              "## Variants", "", "| tower | variant | precision | size | validation |", "|---|---|---|---:|---|"]
    for tower in ("text", "vision"):
        spec = getattr(m, tower)
        for name, variant in sorted((spec.variants if spec else {}).items()):
            size = sum(f.size for f in variant.files) / 1e6
            lines.append(f"| {tower} | `{name}` | {variant.precision} | {size:.1f} MB | {_gate_line(variant)} |")
    lines += ["", "## Use", "", "```bash", "pip install edgeclip",
              f"edgeclip pull {repo} --out bundle --towers text          # only the text tower and the variant for this CPU",
              "```", "", "```python", "import edgeclip", f'model = edgeclip.load("hf:{repo}")',
              'vectors = model.encode_text(["a seal on a rock"], task="retrieval.query")', "```", ""]
    return "\n".join(lines)


def publish(bundle_dir: Path, repo: str, *, private: bool = False, token: str | None = None,
            message: str | None = None, api: Any = None) -> str:
    """Create `repo` if needed and upload the bundle in one commit; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    bundle = Bundle.open(bundle_dir)
    bundle.check_files(bundle.all_files(), verify_hash=True)  # never upload a damaged bundle
    api = api or HfApi(token=token)
    card = model_card(bundle, repo)
    operations = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(bundle.path(f.path))) for f in bundle.all_files()]
    operations += [CommitOperationAdd(path_in_repo=MANIFEST_FILE, path_or_fileobj=str(bundle.directory / MANIFEST_FILE)),
                   CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode())]
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        info = api.create_commit(repo, operations=operations,
                                 commit_message=message or f"edgeclip bundle of {bundle.manifest.source.model_id}")
    except Exception as exc:  # HTTP, auth, quota: all end the same way for the user
        raise ConverterError(f"publishing to {repo} failed: {exc}") from exc
    return str(getattr(info, "commit_url", info))
