"""`build --vocab-from`: a pruned token table, ids remapped at run time, covered texts bit-exact, others counted."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
import edgeclip  # noqa: E402
from converters.errors import ConverterError  # noqa: E402
from converters.build import BuildOptions, build_bundle  # noqa: E402
from converters.vocab import coverage_of  # noqa: E402
from edgeclip.cli import info_text  # noqa: E402

CORPUS = ["A small seal resting on a rock by the sea.", "Una foca pequeña descansa sobre una roca junto al mar.",
          "The harbour is quiet in the morning.", "El puerto está tranquilo por la mañana."]


@pytest.fixture(scope="module")
def pruned(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vocab")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    out = root / "bundle"
    build_bundle(str(tiny_checkpoint), out, BuildOptions(towers=("text",), variants=("int8",), vocab_from=(str(corpus),)))
    return out


def test_the_manifest_records_the_kept_ids_and_the_graphs_shrink(pruned: Path, tiny_bundle: Path) -> None:
    vocab = edgeclip.Bundle.open(pruned).manifest.text.vocab
    assert vocab is not None and list(vocab.kept_ids) == sorted(set(vocab.kept_ids))
    assert len(vocab.kept_ids) < vocab.full_size and vocab.coverage["corpus_texts"] == len(CORPUS)
    assert (pruned / "text.fp32.onnx.data").stat().st_size < (tiny_bundle / "text.fp32.onnx.data").stat().st_size
    assert "vocabulary  pruned: 1" in info_text(edgeclip.Bundle.open(pruned))


def test_covered_texts_embed_exactly_as_with_the_full_table(pruned: Path, tiny_bundle: Path) -> None:
    texts = [*CORPUS, "a seal", "una roca junto al mar"]  # pieces of the corpus
    vocab = edgeclip.Bundle.open(pruned).manifest.text.vocab
    tokenizer = __import__("tokenizers").Tokenizer.from_file(str(pruned / "tokenizer.json"))
    assert coverage_of(tokenizer, vocab, texts)["texts_fully_covered"] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fully covered: no warning
        ours = edgeclip.load(pruned, variant="fp32").encode_text(texts)
    np.testing.assert_array_equal(ours, edgeclip.load(tiny_bundle, variant="fp32").encode_text(texts))


def test_uncovered_tokens_map_to_unk_and_are_counted_once_per_call(pruned: Path, tiny_bundle: Path) -> None:
    texts = ["岩の上のアザラシ", "Тюлень на камне"]  # scripts the corpus never had
    vocab = edgeclip.Bundle.open(pruned).manifest.text.vocab
    tokenizer = __import__("tokenizers").Tokenizer.from_file(str(pruned / "tokenizer.json"))
    kept = set(vocab.kept_ids)
    outside = sum(1 for e in tokenizer.encode_batch(texts) for i in e.ids if i not in kept)
    assert outside > 0
    with pytest.warns(RuntimeWarning, match=rf"^{outside} tokens are outside this bundle's pruned vocabulary") as caught:
        edgeclip.load(pruned, variant="fp32").encode_text(texts)
    assert len([w for w in caught if "pruned vocabulary" in str(w.message)]) == 1


def test_an_unreadable_corpus_is_refused_before_any_export(tiny_checkpoint: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from converters import build as build_module

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported before checking the corpus")

    monkeypatch.setattr(build_module, "export_tower", no_export)
    with pytest.raises(ConverterError, match="--vocab-from .*missing.txt: cannot read it"):
        build_bundle(str(tiny_checkpoint), tmp_path / "b", BuildOptions(vocab_from=(str(tmp_path / "missing.txt"),)))
    assert not (tmp_path / "b").exists()
