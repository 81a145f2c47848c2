"""Text -> token ids with the bundle's tokenizer.json; batches are right-padded per batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ._types import IntArray
from .bundle import TextSpec
from .errors import BundleError, InputError


@dataclass(frozen=True)
class TokenBatch:
    input_ids: IntArray  # (B, L) int64, right-padded with the pad id
    attention_mask: IntArray  # (B, L) int64, 1 = real token


@dataclass(frozen=True)
class TokenizedText:
    ids: list[int]  # what the model sees: <s> ... </s>, at most max_length tokens
    tokens: int  # the text's token count before truncation

    @property
    def truncated(self) -> bool:
        return self.tokens > len(self.ids)


class TextTokenizer:
    """Tokenizes like the official encode_text: <s> text </s>, truncated to max_length tokens in all."""

    def __init__(self, path: Path, spec: TextSpec) -> None:
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception subclasses for bad JSON
            raise BundleError(f"cannot read the tokenizer {path}: {exc}; rebuild the bundle") from exc
        self.spec = spec
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    def prefix(self, task: str | None) -> str:
        if task is None:
            return ""
        if task not in self.spec.task_prefixes:
            known = ", ".join(repr(t) for t in sorted(self.spec.task_prefixes)) or "none"
            raise InputError(f"unknown task {task!r}; this model knows: {known} (or task=None)")
        return self.spec.task_prefixes[task]

    def check_max_length(self, max_length: int | None) -> int:
        if max_length is None:
            return self.spec.default_max_length
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= self.spec.max_length:
            raise InputError(f"max_length must be an int in [2, {self.spec.max_length}], got {max_length!r}")
        return max_length

    def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Token ids per text with <s>/</s>; longer texts are cut to max_length, keeping </s> last."""
        return [row.ids for row in self.tokenize(texts, max_length)]

    def tokenize(self, texts: Sequence[str], max_length: int) -> list[TokenizedText]:
        """Like `encode`, keeping each text's token count before truncation."""
        out = []
        for encoding in self._tokenizer.encode_batch(list(texts)):
            row = encoding.ids
            if len(row) > max_length:
                row = row[: max_length - 1] + row[-1:]  # keep </s>, as the tokenizer's own truncation does
            out.append(TokenizedText(row, len(encoding.ids)))
        return out

    def pad(self, rows: Sequence[Sequence[int]]) -> TokenBatch:
        """Right-pad with the pad id. The mask is `input_ids != pad_token_id`, as upstream builds it, so a
        literal "<pad>" inside a text is masked out too (attention and mean pooling), exactly like upstream."""
        width = max(len(r) for r in rows)
        input_ids = np.full((len(rows), width), self.spec.pad_token_id, dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
        return TokenBatch(input_ids, (input_ids != self.spec.pad_token_id).astype(np.int64))
