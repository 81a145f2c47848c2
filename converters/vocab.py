"""A pruned token table (`build --vocab-from CORPUS...`): keep the rows a corpus needs, remap ids at run time.

Kept: every id the bundle's tokenizer produces on the corpus (one text per non-empty line), the
special tokens, and every single-character piece (with or without the word-start mark), so any
text in the corpus' scripts still segments into known rows. The tokenizer is not touched, so the
segmentation is identical; the runtime maps tokenizer ids to table rows (edgeclip/session.py) and an
id outside the kept set to <unk>'s row, counting it. The text graphs' Gathers over the vocabulary
(the fp32 table; the int8 table and its per-row scales) are cut to the kept rows.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tokenizers import Tokenizer

from edgeclip.bundle import VocabInfo

from .errors import ConverterError
from .graph_data import ROWS_PER_READ, DataFileWriter, GraphWeights, gathers_over_inputs, save_streamed

WORD_START = "\u2581"  # SentencePiece's word-start mark


def corpus_texts(paths: Sequence[str | Path]) -> list[str]:
    texts = []
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConverterError(f"--vocab-from {path}: cannot read it as UTF-8 text ({exc})") from None
        texts += [line for line in lines if line.strip()]
    if not texts:
        raise ConverterError("--vocab-from: the corpus holds no text (one text per non-empty line)")
    return texts


def base_ids(tokenizer: Tokenizer) -> set[int]:
    """Special tokens and single-character pieces: what keeps any text of the corpus' scripts segmentable."""
    specials = {i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special}
    singles = {i for piece, i in tokenizer.get_vocab(with_added_tokens=False).items() if len(piece.removeprefix(WORD_START)) <= 1}
    return specials | singles


def kept_vocabulary(tokenizer: Tokenizer, texts: list[str], files: Sequence[str | Path], table_rows: int) -> VocabInfo:
    """table_rows: the token table's rows (the model's vocab_size; the tokenizer may produce fewer ids)."""
    encodings = tokenizer.encode_batch(texts)
    from_corpus = {i for e in encodings for i in e.ids}
    base = base_ids(tokenizer)
    unk = tokenizer.token_to_id("<unk>")
    if unk is None:
        raise ConverterError("the tokenizer has no <unk> token to stand in for pruned ids")
    kept = sorted(from_corpus | base | {unk})
    return VocabInfo(kept_ids=tuple(kept), unk_id=unk, full_size=max(table_rows, tokenizer.get_vocab_size()), coverage={
        "corpus_files": [Path(f).name for f in files], "corpus_texts": len(texts),
        "corpus_tokens": sum(len(e.ids) for e in encodings), "ids_from_corpus": len(from_corpus),
        "ids_base": len(base), "kept": len(kept)})


def prune_graph(graph: Path, vocab: VocabInfo) -> list[Path]:
    """Cut every vocabulary-sized table a Gather over input_ids reads to the kept rows; rewrite the graph.

    Weight by weight (converters/graph_data.py): the fp32 text graph is 2.2 GB, its table 1 GB."""
    source = GraphWeights(graph)
    tables = {name for name in gathers_over_inputs(source) if source.shape(name)[:1] == (vocab.full_size,)}
    if not tables:
        raise ConverterError(f"{graph.name}: found no token table to prune (a Gather of a {vocab.full_size}-row table)")
    kept = np.asarray(vocab.kept_ids, dtype=np.int64)
    if np.any(np.diff(kept) <= 0):
        raise ConverterError("the kept token ids must be strictly increasing (they index the pruned table in order)")

    def kept_rows(tensor: onnx.TensorProto, writer: DataFileWriter) -> list[onnx.TensorProto] | None:
        return [_kept_rows(source, writer, tensor.name, kept)] if tensor.name in tables else None

    with tempfile.TemporaryDirectory(dir=graph.parent, prefix=".prune-") as scratch:
        # Same file names in a scratch folder: the graph points at its own .data, then both replace the old ones.
        files = save_streamed(source, Path(scratch) / graph.name, kept_rows)
        for file in files:
            os.replace(file, graph.parent / file.name)
    return [graph.parent / file.name for file in files]


def _kept_rows(source: GraphWeights, writer: DataFileWriter, name: str, kept: np.ndarray) -> onnx.TensorProto:
    shape = source.shape(name)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(source.initializers[name].data_type))
    stream = writer.rows(name, dtype, (len(kept), *shape[1:]))
    for start in range(0, shape[0], ROWS_PER_READ):
        in_chunk = kept[(kept >= start) & (kept < start + ROWS_PER_READ)]
        if len(in_chunk):
            stream.write(source.read(name, slice(start, start + ROWS_PER_READ))[in_chunk - start])
    return stream.finish()


def coverage_of(tokenizer: Tokenizer, vocab: VocabInfo, texts: list[str]) -> dict[str, Any]:
    """How much of `texts` (e.g. held-out text in the kept languages) the kept rows cover, per token and per text."""
    kept = set(vocab.kept_ids)
    encodings = tokenizer.encode_batch(texts)
    tokens = sum(len(e.ids) for e in encodings)
    missing = sum(1 for e in encodings for i in e.ids if i not in kept)
    covered_texts = sum(1 for e in encodings if all(i in kept for i in e.ids))
    return {"texts": len(texts), "tokens": tokens, "token_coverage": 1 - missing / max(tokens, 1),
            "texts_fully_covered": covered_texts / max(len(texts), 1)}
