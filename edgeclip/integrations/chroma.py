"""Chroma's "edgeclip" embedding function: jina-clip-v2 in-process, documents and images in one collection.

    from edgeclip.integrations.chroma import EdgeClipEmbeddingFunction
    ef = EdgeClipEmbeddingFunction(bundle="bundles/jina-clip-v2")
    collection = chromadb.PersistentClient("chroma").get_or_create_collection("items", embedding_function=ef)
    collection.add(ids=["t", "i"], documents=["a seal on a rock", None], images=[None, rgb_array])
    collection.query(query_texts=["eine Robbe"])   # or query_images=[rgb_array]

Strings are documents and HxWx3 uint8 arrays are images, in one list if need be, as Chroma's OpenCLIP
function takes them. Queries through `embed_query` get the model's query instruction (as `edgeclip search`);
stored documents are embedded as passages. The function is registered under its name, so a persisted
collection reopened without it rebuilds it from its saved config.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from chromadb.api.types import (  # the chromadb package
    Embeddable,
    EmbeddingFunction,
    Embeddings,
    Space,
)
from chromadb.utils.embedding_functions import register_embedding_function

from ..model import EdgeClip
from .sources import cached_model, embed_mixed, embed_query


def _is_image(value: Any) -> bool:
    return isinstance(value, np.ndarray)  # Chroma hands images over as arrays; every string is a document


@register_embedding_function
class EdgeClipEmbeddingFunction(EmbeddingFunction[Embeddable]):
    def __init__(self, bundle: str, variant: str | None = None, dim: int | None = None, threads: int | None = None) -> None:
        """bundle: a folder or "hf:owner/name"; variant None: what edgeclip picks here; dim: a Matryoshka width."""
        self.bundle, self.variant, self.dim, self.threads = str(bundle), variant, dim, threads

    def model(self) -> EdgeClip:
        return cached_model(self.bundle, self.variant, self.threads)

    def __call__(self, input: Embeddable) -> Embeddings:
        return list(embed_mixed(self.model(), list(input), self.dim, False, _is_image))

    def embed_query(self, input: Embeddable) -> Embeddings:
        return [embed_query(self.model(), item, self.dim, False, _is_image) for item in input]

    @staticmethod
    def name() -> str:
        return "edgeclip"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "l2", "ip"]

    def get_config(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "variant": self.variant, "dim": self.dim, "threads": self.threads}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> EdgeClipEmbeddingFunction:
        return EdgeClipEmbeddingFunction(config["bundle"], config.get("variant"), config.get("dim"), config.get("threads"))

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        if not isinstance(config.get("bundle"), str) or not config["bundle"]:
            raise ValueError("the edgeclip embedding function's config needs 'bundle': a bundle folder or 'hf:owner/name'")
