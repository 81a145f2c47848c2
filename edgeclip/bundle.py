"""The bundle: a directory with manifest.json, one ONNX graph per tower and variant, tokenizer.json.

The manifest describes everything the runtime needs (names, shapes, preprocessing, dims,
checksums), so the runtime never guesses. The converters write it with these same classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Union

from .errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
PULL_RECORD = ".edgeclip-pull.json"  # written by `edgeclip pull`: the folder holds only the towers/variants asked for
Tower = Literal["text", "vision"]
TOWERS: tuple[Tower, ...] = ("text", "vision")


def check_relative_path(path: str) -> str:
    """A manifest path must stay inside the bundle: relative, '/'-separated, no '..'."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or "\\" in path or ".." in pure.parts or ":" in pure.parts[0]:
        raise BundleError(f"manifest path {path!r} is absolute or leaves the bundle; paths must be relative and inside it")
    return path


@dataclass(frozen=True)
class TensorSpec:
    name: str  # graph input/output name
    dtype: str  # numpy dtype name: "int64", "float32", ...
    shape: tuple[int | str, ...]  # ints are fixed sizes, strings name dynamic axes ("batch", "seq")


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the bundle directory
    sha256: str  # hex digest of the file's bytes
    size: int  # bytes

    def __post_init__(self) -> None:
        check_relative_path(self.path)


@dataclass(frozen=True)
class Variant:
    precision: str  # "fp32", "fp16", "int8", "int4": the weights' storage precision
    graph: str  # the .onnx file to open (also listed in `files`)
    files: tuple[FileEntry, ...]  # the graph and its external-data file, if any
    inputs: tuple[TensorSpec, ...]  # graph inputs, in order
    outputs: tuple[TensorSpec, ...]  # graph outputs, in order; the first is the embedding
    output_dim: int  # width of the embedding output
    normalized: bool  # True when the graph already L2-normalizes its output
    validation: dict[str, Any] = field(default_factory=dict)  # figures against the reference, per check
    # Per-row activation scales: a row's embedding does not depend on its batch-mates. None (bundles built
    # before it was recorded): true for every precision but int8, whose scales were then per tensor.
    row_independent: bool | None = None

    @property
    def batch_independent(self) -> bool:
        """True when an item embeds the same (to float rounding) alone or inside any batch."""
        return self.row_independent if self.row_independent is not None else self.precision != "int8"

    def __post_init__(self) -> None:
        check_relative_path(self.graph)
        if self.graph not in {f.path for f in self.files}:
            raise BundleError(f"variant graph {self.graph!r} is not among its files; rebuild the bundle")


@dataclass(frozen=True)
class VocabInfo:
    """A pruned token table (`build --vocab-from`): the graphs hold only these rows; the tokenizer is unchanged."""

    kept_ids: tuple[int, ...]  # sorted tokenizer ids; table row i holds kept_ids[i]
    unk_id: int  # the id whose row stands in for every id outside kept_ids
    full_size: int  # the tokenizer's vocabulary size
    coverage: dict[str, Any]  # corpus files, texts, tokens; corpus-only and base (specials, single characters) counts


@dataclass(frozen=True)
class TextSpec:
    tokenizer: FileEntry  # the tokenizer.json
    pad_token_id: int  # id used for right padding (attention_mask marks real tokens)
    default_max_length: int  # tokens per text, <s> and </s> included, unless the caller asks otherwise
    max_length: int  # the most tokens the model takes; longer input is truncated
    pooling: str  # "mean": masked mean over real tokens, done inside the graph
    task_prefixes: dict[str, str]  # task name -> text prepended to every input of that task
    variants: dict[str, Variant]  # variant name -> graph
    vocab: VocabInfo | None = None  # set when the token table was pruned: ids are remapped at run time

    def __post_init__(self) -> None:
        if not 2 <= self.default_max_length <= self.max_length:
            raise BundleError(f"text default_max_length {self.default_max_length} must be in [2, max_length={self.max_length}]")


@dataclass(frozen=True)
class VisionSpec:
    image_size: int  # square model input side, pixels
    resize_mode: str  # "shortest": shorter side to image_size (longer side truncated), aspect kept
    interpolation: str  # "bicubic": PIL's antialiased bicubic
    crop: str  # "center": torchvision CenterCrop offsets, int(round((size - image_size) / 2))
    mean: tuple[float, float, float]  # per-channel mean, after scaling to [0, 1]
    std: tuple[float, float, float]  # per-channel std
    pooling: str  # "cls": final-LN CLS token, done inside the graph
    variants: dict[str, Variant]  # variant name -> graph
    # A resolution variant: the model's own input size, when the graphs were exported for image_size
    # instead (position embeddings resampled). Its quality is unknown until validated on real weights.
    source_image_size: int | None = None


@dataclass(frozen=True)
class SourceInfo:
    model_id: str  # hub id or checkpoint name
    revision: str | None  # resolved hub commit, when known
    random_weights: bool  # True: made by `make-checkpoint`, embeddings carry no meaning
    files: tuple[FileEntry, ...]  # checksums of the source files the bundle was built from


@dataclass(frozen=True)
class LicenseInfo:
    spdx: str  # SPDX id of the weights' licence
    url: str  # where the licence text lives
    note: str  # what it means for users of this bundle


@dataclass(frozen=True)
class Manifest:
    schema_version: int  # SCHEMA_VERSION of the writer
    source: SourceInfo  # what the bundle was converted from
    license: LicenseInfo  # licence of the source weights (the bundle inherits it)
    embed_dim: int  # full embedding width of both towers
    matryoshka_dims: tuple[int, ...]  # allowed truncate_dim values, increasing, the last == embed_dim
    text: TextSpec | None  # None when the bundle ships no text tower
    vision: VisionSpec | None  # None when the bundle ships no image tower
    created_by: str  # writer, e.g. "edgeclip 0.1.0"

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise BundleError(
                f"manifest schema_version {self.schema_version} is not supported by this edgeclip "
                f"(it reads {SCHEMA_VERSION}); upgrade edgeclip or rebuild the bundle"
            )
        dims = list(self.matryoshka_dims)
        if not dims or dims != sorted(set(dims)) or dims[-1] != self.embed_dim:
            raise BundleError(f"matryoshka_dims {dims} must increase and end at embed_dim {self.embed_dim}")
        if self.text is None and self.vision is None:
            raise BundleError("the manifest lists no tower; rebuild the bundle with --towers text,vision")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BundleError(f"manifest.json is not valid JSON ({exc}); rebuild the bundle") from exc
        if not isinstance(raw, dict):
            raise BundleError("manifest.json must hold a JSON object; rebuild the bundle")
        if raw.get("schema_version") != SCHEMA_VERSION:  # say this before any field error
            raise BundleError(
                f"manifest schema_version {raw.get('schema_version')!r} is not supported by this edgeclip "
                f"(it reads {SCHEMA_VERSION}); upgrade edgeclip or rebuild the bundle"
            )
        return _decode(cls, raw, "manifest")


def _decode(kind: Any, value: Any, where: str) -> Any:
    """Build `kind` (a dataclass or typing form) from parsed JSON, naming the field on mismatch."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise BundleError(f"{where}: expected an object; rebuild the bundle")
        hints = typing.get_type_hints(kind)
        known = {f.name for f in dataclasses.fields(kind)}
        missing = [f.name for f in dataclasses.fields(kind) if f.name not in value and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise BundleError(f"{where}: missing {', '.join(missing)}; rebuild the bundle with this edgeclip")
        args = {name: _decode(hints[name], item, f"{where}.{name}") for name, item in value.items() if name in known}
        return kind(**args)
    if origin in (Union, types.UnionType):
        options = [o for o in typing.get_args(kind) if o is not type(None)]
        if value is None and len(options) < len(typing.get_args(kind)):
            return None
        for option in options[:-1]:
            try:
                return _decode(option, value, where)
            except BundleError:
                continue
        return _decode(options[-1], value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise BundleError(f"{where}: expected a list; rebuild the bundle")
        item_kinds = typing.get_args(kind)
        if len(item_kinds) == 2 and item_kinds[1] is Ellipsis:
            return tuple(_decode(item_kinds[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(item_kinds) != len(value):
            raise BundleError(f"{where}: expected {len(item_kinds)} items, got {len(value)}")
        return tuple(_decode(k, v, f"{where}[{i}]") for i, (k, v) in enumerate(zip(item_kinds, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise BundleError(f"{where}: expected an object; rebuild the bundle")
        _, value_kind = typing.get_args(kind)
        return {str(k): _decode(value_kind, v, f"{where}.{k}") for k, v in value.items()}
    if kind is Any:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, str, bool, float) and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise BundleError(f"{where}: expected {kind.__name__}, got {type(value).__name__}; rebuild the bundle")
    return value


class Bundle:
    """An opened bundle directory: its manifest and safe access to its files."""

    def __init__(self, directory: Path, manifest: Manifest) -> None:
        self.directory = directory
        self.manifest = manifest

    @classmethod
    def open(cls, directory: str | Path) -> Bundle:
        root = Path(directory).expanduser()
        manifest_path = root / MANIFEST_FILE
        if root.is_file():
            raise BundleError(f"{root} is a file; give the bundle's folder (the one holding {MANIFEST_FILE})")
        if not root.is_dir():
            raise BundleError(f"bundle directory {root} does not exist; build one with `python -m converters build`")
        if not manifest_path.is_file():
            raise BundleError(f"{root} has no {MANIFEST_FILE}: not a bundle, or an interrupted build; rebuild it")
        return cls(root.resolve(), Manifest.from_json(manifest_path.read_text(encoding="utf-8")))

    def tower(self, tower: Tower) -> TextSpec | VisionSpec:
        spec = self.manifest.text if tower == "text" else self.manifest.vision
        if spec is None:
            raise BundleError(f"this bundle has no {tower} tower; rebuild it with --towers text,vision")
        return spec

    def variant(self, tower: Tower, name: str) -> Variant:
        variants = self.tower(tower).variants
        if name not in variants:
            raise BundleError(f"the {tower} tower has no variant {name!r}; available: {', '.join(sorted(variants))}")
        return variants[name]

    def path(self, relative: str) -> Path:
        """Absolute path of a manifest entry, refusing anything that resolves outside the bundle."""
        resolved = (self.directory / check_relative_path(relative)).resolve()
        if not resolved.is_relative_to(self.directory):
            raise BundleError(f"manifest path {relative!r} resolves outside the bundle (symlink?); refusing to open it")
        return resolved

    def all_files(self) -> tuple[FileEntry, ...]:
        """Every file the manifest lists: the tokenizer and each variant's graph and data."""
        entries: list[FileEntry] = []
        if self.manifest.text is not None:
            entries.append(self.manifest.text.tokenizer)
        for spec in (self.manifest.text, self.manifest.vision):
            for variant in (spec.variants.values() if spec is not None else ()):
                entries += variant.files
        return tuple(entries)

    def has_files(self, variant: Variant) -> bool:
        """Whether every file of `variant` is here (a pulled bundle holds only the variants asked for)."""
        return all(self.path(f.path).is_file() for f in variant.files)

    def check_files(self, entries: tuple[FileEntry, ...], verify_hash: bool = False) -> None:
        """Presence and size always; sha256 when asked. Lists every problem in one BundleError."""
        problems: list[str] = []
        for entry in entries:
            path = self.path(entry.path)
            if not path.is_file():
                problems.append(f"{entry.path}: missing")
            elif path.stat().st_size != entry.size:
                problems.append(f"{entry.path}: {path.stat().st_size} bytes, manifest says {entry.size}")
            elif verify_hash and sha256_file(path) != entry.sha256:
                problems.append(f"{entry.path}: sha256 differs from the manifest (tampered or corrupt)")
        if problems:
            if (self.directory / PULL_RECORD).is_file() and all(p.endswith(": missing") for p in problems):
                raise BundleError(f"bundle {self.directory} was pulled without these files:\n  " + "\n  ".join(problems)
                                  + "\nPull them too: `edgeclip pull REPO --out DIR --variant NAME` (or --towers)")
            raise BundleError(f"bundle {self.directory} is damaged:\n  " + "\n  ".join(problems) + "\nRebuild or re-download it.")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
