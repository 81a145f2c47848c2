"""LanceDB's "edgeclip" embedding function: jina-clip-v2 in-process, texts and images in one vector column.

    import edgeclip.integrations.lancedb  # registers "edgeclip"
    from lancedb.embeddings import get_registry
    func = get_registry().get("edgeclip").create(bundle="bundles/jina-clip-v2")

    class Item(LanceModel):
        source: str = func.SourceField()          # a text, or an image's path / URL / data: URI
        vector: Vector(func.ndims()) = func.VectorField()

A table with this schema embeds on insert and on `table.search("a text" | PIL image | image path)`.
Text queries get the model's query instruction, as `edgeclip search` does; sources are embedded as passages.
LanceDB stores the function's settings with the table, so reopening it loads the same bundle.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from lancedb.embeddings import (  # the lancedb package: not an edgeclip dependency
    EmbeddingFunction,
    register,
)
from pydantic import PrivateAttr

from ..model import EdgeClip
from .sources import cached_model, embed_mixed, embed_query


@register("edgeclip")
class EdgeClipEmbeddings(EmbeddingFunction):
    bundle: str  # a bundle folder, or "hf:owner/name[@revision]" (pulled once into the cache)
    variant: str | None = None  # None: what edgeclip picks on this machine
    dim: int | None = None  # a Matryoshka width (one of the bundle's matryoshka_dims); None: full width
    threads: int | None = None
    fetch_urls: bool = False  # embed http(s) image URLs among the sources (edgeclip's fetch policy)
    _ndims: int | None = PrivateAttr(None)

    def model(self) -> EdgeClip:
        return cached_model(self.bundle, self.variant, self.threads)

    def ndims(self) -> int:
        if self._ndims is None:
            self._ndims = self.dim or self.model().manifest.embed_dim
        return self._ndims

    def compute_source_embeddings(self, inputs: Any, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        return list(embed_mixed(self.model(), _values(inputs), self.dim, self.fetch_urls))

    def compute_query_embeddings(self, query: Any, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        return [embed_query(self.model(), query, self.dim, self.fetch_urls)]


def _values(inputs: Any) -> list[Any]:
    if isinstance(inputs, pa.ChunkedArray):
        return inputs.combine_chunks().to_pylist()
    if isinstance(inputs, pa.Array):
        return inputs.to_pylist()
    if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__len__"):
        return [inputs]
    return list(inputs)
