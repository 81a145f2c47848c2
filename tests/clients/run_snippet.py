"""Run one client snippet from docs/clients.md in the clients' virtualenv and write what it embedded.

    python run_snippet.py SNIPPET.py OUT.json     (in a folder holding photo.jpg)

The snippet is run as written; afterwards its `texts`, `text_vectors` and `image_vectors` go to OUT.json
for the main test to compare with edgeclip's in-process vectors. Only the standard library and numpy
here: this file runs where edgeclip is not installed.
"""

from __future__ import annotations

import json
import runpy
import sys

import numpy as np


def main(snippet: str, out: str) -> None:
    names = runpy.run_path(snippet, run_name="__main__")
    result = {"texts": list(names["texts"]),
              "text_vectors": np.asarray(names["text_vectors"], dtype=np.float64).tolist(),
              "image_vectors": np.asarray(names.get("image_vectors", []), dtype=np.float64).tolist()}
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
