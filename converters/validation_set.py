"""The validation set kept as data: multilingual texts (by language group) and varied images.

Texts are converters/data/multilingual_corpus.txt (242 lines, 25 languages in 14 scripts,
low-resource ones included); images are converters/data/validation_images (see SOURCES.md there).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import ConverterError
from .tokenizer_builder import corpus_lines

IMAGE_SUFFIXES = (".jpg", ".png")

# Script families, so a damaged script (a broken block of token rows, say) shows up on its own.
# "low-resource" collects languages with little web text, whatever their script.
LANGUAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "latin": ("en", "de", "fr", "es", "vi", "tr"),
    "cyrillic-greek": ("ru", "uk", "el"),
    "cjk": ("zh", "ja", "ko"),
    "arabic-hebrew": ("ar", "fa", "he"),
    "indic": ("hi", "bn", "ta"),
    "southeast-asian": ("th", "km"),
    "low-resource": ("sw", "yo", "am", "ka", "hy"),
    "mixed-code": ("mix", "code"),
}
GROUP_OF = {lang: group for group, langs in LANGUAGE_GROUPS.items() for lang in langs}


@dataclass(frozen=True)
class ValidationText:
    lang: str  # corpus language tag
    group: str  # LANGUAGE_GROUPS key
    text: str


def validation_texts() -> list[ValidationText]:
    texts = []
    for lang, text in corpus_lines():
        if lang not in GROUP_OF:
            raise ConverterError(f"corpus language {lang!r} has no group; add it to LANGUAGE_GROUPS in {__name__}")
        texts.append(ValidationText(lang, GROUP_OF[lang], text))
    return texts


def validation_images() -> list[Path]:
    folder = Path(str(resources.files("converters").joinpath("data/validation_images")))
    return sorted(p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES)
