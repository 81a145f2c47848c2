"""Run in the clients' virtualenv (chromadb there, edgeclip from the checkout): a persisted collection of texts
and images through EdgeClipEmbeddingFunction, reopened from its saved config; writes what it saw as JSON."""

import json
import sys
from pathlib import Path

import chromadb
import numpy as np
from PIL import Image

from edgeclip.integrations.chroma import EdgeClipEmbeddingFunction

bundle, folder, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
texts = ["A red bicycle leans against a wall.", "Ein rotes Fahrrad lehnt an einer Wand.", "Tax forms are due in April."]
images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]
ef = EdgeClipEmbeddingFunction(bundle=bundle)
client = chromadb.PersistentClient(path=str(folder / "chroma"))
collection = client.create_collection("items", embedding_function=ef)
ids = [f"t{i}" for i in range(len(texts))] + [f"i{i}" for i in range(len(images))]
collection.add(ids=ids[: len(texts)], documents=texts)
collection.add(ids=ids[len(texts):], images=images)
mixed = ef(["a mixed call", images[0]])  # strings and arrays in one list, as OpenCLIP's function takes them
del client
reopened = chromadb.PersistentClient(path=str(folder / "chroma")).get_collection("items")  # no function passed
stored = reopened.get(ids=ids, include=["embeddings"])
by_text = reopened.query(query_texts=["a red bicycle"], n_results=len(ids), include=["distances"])
by_image = reopened.query(query_images=[images[1]], n_results=len(ids), include=["distances"])
rebuilt = EdgeClipEmbeddingFunction.build_from_config(ef.get_config())
out.write_text(json.dumps({
    "texts": texts, "ids": stored["ids"], "embeddings": np.asarray(stored["embeddings"]).tolist(),
    "mixed": np.asarray(mixed).tolist(), "config": rebuilt.get_config(), "space": reopened.configuration_json["hnsw"]["space"],
    "by_text": [by_text["ids"][0], by_text["distances"][0]], "by_image": [by_image["ids"][0], by_image["distances"][0]],
    "function": reopened.configuration_json["embedding_function"],  # what a reopened collection embeds with
}))
