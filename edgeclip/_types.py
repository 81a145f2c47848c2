"""Type aliases shared by the runtime modules."""

from __future__ import annotations

import os
from typing import IO, Literal, Union

import numpy as np
import numpy.typing as npt
from PIL import Image

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
# A path (str or PathLike), encoded bytes, a binary file object, a PIL image, or an HxWx3 uint8 array.
ImageInput = Union[str, "os.PathLike[str]", bytes, IO[bytes], Image.Image, npt.NDArray[np.uint8]]
# float32 (default), float16, or sign bits packed 8 per byte (binary: int8 offset by -128; ubinary: uint8).
OutputPrecision = Literal["float32", "float16", "binary", "ubinary"]
