"""Bundles from the Hugging Face Hub: `edgeclip pull REPO[@REV] --out DIR` and `edgeclip.load("hf:owner/name[@rev]")`.

The manifest comes first; then only the files it lists for the towers and variants asked for (a
text-only app gets the tokenizer and `text.<variant>.*`, nothing of the vision tower). Downloads go
through huggingface_hub and its cache (installed with the runtime, via tokenizers), so
HF_HUB_OFFLINE=1 serves a second pull from the cache, and HF_ENDPOINT points at a mirror. Every
file's sha256 is checked against the manifest before it is placed; the bundle folder gets hard links
to the cached files where the filesystem allows (else copies), each placed atomically, plus the
manifest unchanged, so a pulled bundle has the same checksum as the one published.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .bundle import MANIFEST_FILE, PULL_RECORD, FileEntry, Manifest, Tower, sha256_file
from .errors import BundleError

HF_PREFIX = "hf:"
TOWERS: tuple[Tower, ...] = ("text", "vision")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """'owner/name[@revision]' (an 'hf:' prefix allowed) -> (repo id, revision or None)."""
    ref = ref.removeprefix(HF_PREFIX)
    repo, _, revision = ref.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")) or (revision == "" and "@" in ref):
        raise BundleError(f"{ref!r} is not a hub bundle reference: give owner/name or owner/name@revision")
    return repo, revision or None


def default_cache_root() -> Path:
    """Where `load("hf:...")` keeps bundle folders (hard links into huggingface_hub's cache)."""
    base = os.environ.get("EDGECLIP_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "edgeclip")
    return Path(base) / "bundles"


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub import errors

    return (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.EntryNotFoundError,
            errors.LocalEntryNotFoundError, errors.HfHubHTTPError, errors.OfflineModeIsEnabled)


def _download(repo: str, filename: str, revision: str | None) -> Path:
    from huggingface_hub import errors, hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except errors.RepositoryNotFoundError:
        raise BundleError(f"no repository {repo!r} on {_endpoint()} (or it is private: log in with `hf auth login` "
                          "or set HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise BundleError(f"{repo} has no revision {revision!r}") from None
    # LocalEntryNotFoundError (offline, not cached) is an EntryNotFoundError too: it goes first.
    except errors.LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        why = ("HF_HUB_OFFLINE is set and it is not in the cache: pull it once online" if offline else
               f"the hub ({_endpoint()}) cannot be reached and it is not in the cache")
        raise BundleError(f"cannot get {filename} of {repo}: {why}") from None
    except errors.EntryNotFoundError:
        raise BundleError(f"{repo}@{revision or 'main'} has no {filename}: not an edgeclip bundle repository, "
                          "or the manifest lists a file that was not uploaded") from None
    except _hub_errors() as exc:
        raise BundleError(f"cannot get {filename} of {repo}: {exc}") from None


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _resolved_revision(manifest_path: Path, revision: str | None) -> str:
    """The commit a cached file belongs to: huggingface_hub names snapshot folders by commit."""
    return manifest_path.parent.name if manifest_path.parent.parent.name == "snapshots" else (revision or "main")


def files_for(manifest: Manifest, towers: Sequence[Tower], variants: dict[Tower, list[str]]) -> list[FileEntry]:
    entries: list[FileEntry] = []
    for tower in towers:
        spec = manifest.text if tower == "text" else manifest.vision
        if spec is None:
            raise BundleError(f"this bundle has no {tower} tower (it has {', '.join(t for t in TOWERS if getattr(manifest, t))})")
        if tower == "text":
            entries.append(spec.tokenizer)  # type: ignore[union-attr]
        for name in variants[tower]:
            if name not in spec.variants:
                raise BundleError(f"the {tower} tower has no variant {name!r}; it has {', '.join(sorted(spec.variants))}")
            entries += spec.variants[name].files
    return list({entry.path: entry for entry in entries}.values())  # variants can share a weights file


def _place(cached: Path, target: Path) -> None:
    """A hard link to the cached file (a copy across filesystems), renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.pulling")
    tmp.unlink(missing_ok=True)
    try:
        os.link(cached.resolve(), tmp)
    except OSError:
        shutil.copyfile(cached, tmp)
    os.replace(tmp, target)


def pull(ref: str, out: str | os.PathLike[str] | None = None, *, towers: Sequence[Tower] | None = None,
         variants: Sequence[str] | None = None, progress: object = None) -> Path:
    """Download a bundle's manifest and the files of the given towers and variants; returns the bundle folder.

    variants: names for every tower asked for (a tower lacking one is an error); None: the variant
    edgeclip would pick on this machine, per tower. out None: a folder under default_cache_root().
    """
    from .model import preferred_variant

    repo, revision = parse_ref(ref)
    manifest_path = _download(repo, MANIFEST_FILE, revision)
    try:
        manifest = Manifest.from_json(manifest_path.read_text(encoding="utf-8"))
    except (BundleError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{repo}'s {MANIFEST_FILE} is not an edgeclip manifest ({exc})") from None
    commit = _resolved_revision(manifest_path, revision)
    towers = list(towers or [t for t in TOWERS if getattr(manifest, t) is not None])
    chosen: dict[Tower, list[str]] = {}
    for tower in towers:
        spec = manifest.text if tower == "text" else manifest.vision
        chosen[tower] = list(variants) if variants else [preferred_variant(sorted(spec.variants) if spec else [])]
    entries = files_for(manifest, towers, chosen)
    target = Path(out) if out is not None else default_cache_root() / repo.replace("/", "--") / commit
    for entry in entries:
        if progress:
            progress(f"{entry.path} ({entry.size / 1e6:.1f} MB)")  # type: ignore[operator]
        cached = _download(repo, entry.path, commit if commit != "main" else revision)
        if cached.stat().st_size != entry.size or sha256_file(cached) != entry.sha256:
            raise BundleError(f"{repo}/{entry.path}: the downloaded file's sha256 differs from the manifest's "
                              f"({entry.sha256[:12]}...): corrupt download or a tampered repository; nothing of it was used")
        _place(cached, target / entry.path)
    _place(manifest_path, target / MANIFEST_FILE)
    record = {"repo": repo, "revision": commit, "towers": towers, "variants": chosen}
    (target / PULL_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return target
