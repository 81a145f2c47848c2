"""One declarative export contract per tower: names, dynamic axes, opset and tolerances.

Export, validation and packaging all read these, so the graph and the manifest cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeclip.bundle import TensorSpec, Tower

from .config import ClipConfig

OPSET = 17  # LayerNormalization is a single op from 17 on


@dataclass(frozen=True)
class ExportSpec:
    tower: Tower  # which tower this graph holds
    inputs: tuple[TensorSpec, ...]  # graph inputs in order; string dims are dynamic axes
    outputs: tuple[TensorSpec, ...]  # graph outputs in order; the first is the embedding
    head_dim: int | None = None  # set: the output is the L2-normalized Matryoshka prefix of this width
    opset: int = OPSET  # default-domain opset of the exported graph
    atol: float = 1e-4  # max |onnx - reference| allowed per element of the unit-norm embeddings
    min_cosine: float = 0.99999  # lowest cosine(onnx, reference) allowed per embedding

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {
            spec.name: {axis: dim for axis, dim in enumerate(spec.shape) if isinstance(dim, str)}
            for spec in (*self.inputs, *self.outputs)
        }

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]


def text_spec(cfg: ClipConfig, head_dim: int | None = None) -> ExportSpec:
    output_dim = head_dim or cfg.embed_dim
    return ExportSpec(
        tower="text",
        inputs=(
            TensorSpec("input_ids", "int64", ("batch", "seq")),
            TensorSpec("attention_mask", "int64", ("batch", "seq")),  # 1 = real token, 0 = padding
        ),
        outputs=(TensorSpec("text_embeds", "float32", ("batch", output_dim)),),  # mean-pooled (normalized if a head)
        head_dim=head_dim,
    )


def vision_spec(cfg: ClipConfig, head_dim: int | None = None) -> ExportSpec:
    output_dim = head_dim or cfg.embed_dim
    size = cfg.vision.image_size
    return ExportSpec(
        tower="vision",
        inputs=(TensorSpec("pixel_values", "float32", ("batch", 3, size, size)),),
        outputs=(TensorSpec("image_embeds", "float32", ("batch", output_dim)),),  # CLS (normalized if a head)
        head_dim=head_dim,
    )


def export_spec(cfg: ClipConfig, tower: Tower, head_dim: int | None = None) -> ExportSpec:
    """The tower's contract; with `head_dim` the output is the normalized head_dim-wide Matryoshka prefix."""
    return text_spec(cfg, head_dim) if tower == "text" else vision_spec(cfg, head_dim)
