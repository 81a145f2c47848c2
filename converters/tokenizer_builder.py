"""Build an XLM-R-like tokenizer.json from the project's multilingual corpus.

The real XLM-R tokenizer (250002 pieces) comes with the real checkpoint and cannot be fetched
here. For checkpoints we make ourselves we train a small Unigram model with the same special
tokens, ids and template: ``<s>``=0 ``<pad>``=1 ``</s>``=2 ``<unk>``=3, ``<mask>`` last,
``<s> X </s>``, and the same Metaspace ("▁") word-boundary handling.
"""

from __future__ import annotations

from importlib import resources

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as in XLM-R
MASK_TOKEN = "<mask>"


def corpus_lines() -> list[tuple[str, str]]:
    """(language, text) pairs of converters/data/multilingual_corpus.txt."""
    text = resources.files("converters").joinpath("data/multilingual_corpus.txt").read_text(encoding="utf-8")
    pairs = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            lang, _, sentence = line.partition("\t")
            pairs.append((lang, sentence))
    return pairs


def build_tokenizer(vocab_size: int = 4000) -> Tokenizer:
    """Train a Unigram tokenizer on the corpus; deterministic for a given corpus and vocab_size."""
    tokenizer = Tokenizer(models.Unigram())
    # XLM-R normalizes with a precompiled NFKC-like map, then folds runs of spaces.
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - 1,  # <mask> is appended after training, as the last id
        special_tokens=list(SPECIAL_TOKENS),
        unk_token="<unk>",
        show_progress=False,
    )
    tokenizer.train_from_iterator([text for _, text in corpus_lines()], trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(MASK_TOKEN, lstrip=True, special=True)])
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return tokenizer
