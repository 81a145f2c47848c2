"""An ONNX graph's weights read and written one tensor at a time, so rewriting a 2 GB graph needs megabytes.

`onnx.load` reads every weight of a graph into memory and `onnx.save` serializes them again; the
quantizers on top of it held a full-size text graph several times over (build peak 9.3 GB). Here the
graph structure is loaded without its external data, each weight is read from the data file when it
is needed (`np.fromfile`, not a memory map: mapped pages would count toward RSS until unmapped) and
each new tensor is appended to the output data file as soon as it is made.

Offsets in the output file are aligned to 4 KiB as onnx writes them, so ONNX Runtime can memory-map
the weights instead of copying them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ALIGNMENT = 4096
INLINE_BYTES = 1024  # smaller tensors stay inside the graph file, as `save_graph` leaves them
ROWS_PER_READ = 16384  # of a token table read in pieces: 64 MB at fp32 x 1024


def _external_info(tensor: TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def _empty_tensor(name: str, dtype: np.dtype, shape: tuple[int, ...]) -> TensorProto:
    proto = TensorProto()
    proto.name = name
    proto.data_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    proto.dims.extend(shape)
    return proto


def _raw(array: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


class GraphWeights:
    """A graph's structure in memory and its weights on disk (external data is resolved beside `graph`)."""

    def __init__(self, graph: Path, model: onnx.ModelProto | None = None) -> None:
        self.path = Path(graph)
        self.model = model if model is not None else onnx.load(str(self.path), load_external_data=False)
        self.initializers = {t.name: t for t in self.model.graph.initializer}

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.initializers[name].dims)

    def read(self, name: str, rows: slice | None = None) -> np.ndarray:
        """The tensor (or rows `start:stop` of its first axis) as a fresh array."""
        return self.read_tensor(self.initializers[name], rows)

    def read_tensor(self, tensor: TensorProto, rows: slice | None = None) -> np.ndarray:
        if tensor.data_location != TensorProto.EXTERNAL:
            array = numpy_helper.to_array(tensor)
            return array if rows is None else array[rows]
        info = _external_info(tensor)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
        shape = tuple(tensor.dims)
        row_items = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        start, stop = (0, shape[0] if shape else 1) if rows is None else rows.indices(shape[0])[:2]
        offset = int(info.get("offset", 0)) + start * row_items * dtype.itemsize
        with open(self.path.parent / info["location"], "rb") as handle:
            handle.seek(offset)
            array = np.fromfile(handle, dtype=dtype, count=(stop - start) * row_items)
        return array.reshape((stop - start, *shape[1:]) if shape else ())


class DataFileWriter:
    """Appends tensors to `<graph>.data` beside `graph` and hands back the TensorProtos that point at them."""

    def __init__(self, graph: Path) -> None:
        self.graph = Path(graph)
        self.location = self.graph.name + ".data"
        self.data_path = self.graph.with_name(self.location)
        self._file: BinaryIO = open(self.data_path, "wb")

    def tensor(self, name: str, array: np.ndarray) -> TensorProto:
        array = np.ascontiguousarray(array)
        if array.nbytes < INLINE_BYTES:
            return numpy_helper.from_array(array, name)
        proto = _empty_tensor(name, array.dtype, array.shape)
        offset = self._align()
        self._file.write(_raw(array))
        self._point(proto, offset, array.nbytes)
        return proto

    def rows(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> "_RowStream":
        """A tensor written in pieces of rows (a 250002-row token table is never in memory at once)."""
        return _RowStream(self, name, np.dtype(dtype), shape)

    def _align(self) -> int:
        offset = self._file.tell()
        padding = -offset % ALIGNMENT
        if padding:
            self._file.write(b"\0" * padding)
        return offset + padding

    def _point(self, proto: TensorProto, offset: int, length: int) -> None:
        proto.data_location = TensorProto.EXTERNAL
        del proto.external_data[:]
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(length))):
            entry = proto.external_data.add()
            entry.key, entry.value = key, value

    def save(self, model: onnx.ModelProto) -> list[Path]:
        """Write the graph structure (its initializers already point into the data file). Returns both files."""
        self._file.close()
        onnx.save_model(model, str(self.graph))
        return [self.graph, self.data_path]


Replacement = Callable[[TensorProto, "DataFileWriter"], list[TensorProto] | None]


def save_streamed(source: GraphWeights, out_graph: Path, replace: Replacement | None = None) -> list[Path]:
    """Write `source.model` to `out_graph` + `.data`, one tensor at a time; returns both files.

    replace(tensor, writer): the tensors to write in its place (through `writer`), or None to copy it."""
    writer = DataFileWriter(out_graph)
    written: list[TensorProto] = []
    for tensor in source.model.graph.initializer:
        instead = replace(tensor, writer) if replace is not None else None
        written += instead if instead is not None else [writer.tensor(tensor.name, source.read_tensor(tensor))]
    del source.model.graph.initializer[:]
    source.model.graph.initializer.extend(written)
    return writer.save(source.model)


def gathers_over_inputs(source: GraphWeights) -> dict[str, list[onnx.NodeProto]]:
    """Initializers that a Gather indexes by a graph input (the token-table lookups) -> those Gathers."""
    graph_inputs = {i.name for i in source.model.graph.input}
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in source.model.graph.node:
        if node.op_type == "Gather" and node.input[0] in source.initializers and node.input[1] in graph_inputs:
            found.setdefault(node.input[0], []).append(node)
    return found


class _RowStream:
    def __init__(self, writer: DataFileWriter, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.writer, self.dtype, self.shape = writer, dtype, shape
        self.proto = _empty_tensor(name, dtype, shape)
        self.offset = writer._align()
        self.written = 0

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        self.writer._file.write(_raw(rows))
        self.written += rows.nbytes

    def finish(self) -> TensorProto:
        expected = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        if self.written != expected:
            raise AssertionError(f"{self.proto.name}: wrote {self.written} bytes, the shape needs {expected}")
        self.writer._point(self.proto, self.offset, self.written)
        return self.proto
