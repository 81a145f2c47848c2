"""The reference towers against a second implementation written straight from the spec.

The numpy versions below read the raw safetensors themselves (their own LoRA merge, their own
RoPE tables, loops instead of the reference's tensor tricks), in float64. Agreement checks the
loader, the merge and both forwards at once.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.numpy import load_file  # noqa: E402

from converters.checkpoint import WEIGHTS_FILE, load_reference, resolve_source  # noqa: E402
from converters.config import load_clip_config  # noqa: E402

_erf = np.vectorize(math.erf)


def _ln(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_text(raw: dict[str, np.ndarray], cfg, ids: list[int]) -> np.ndarray:
    """Spec 4.2-4.3 for one unpadded sequence."""
    p = "text_model.transformer.roberta."

    def merged(name: str, embedding: bool) -> np.ndarray:
        w = raw[f"{p}{name}.parametrizations.weight.original"]
        a = raw[f"{p}{name}.parametrizations.weight.0.lora_A"][0]
        b = raw[f"{p}{name}.parametrizations.weight.0.lora_B"][0]
        return w + (a @ b if embedding else b @ a)  # scaling alpha/rank = 4/4

    heads, d, eps = cfg.num_heads, cfg.head_dim, cfg.layer_norm_eps
    h = merged("embeddings.word_embeddings", True)[ids] + merged("embeddings.token_type_embeddings", True)[0]
    h = _ln(h, raw[p + "emb_ln.weight"], raw[p + "emb_ln.bias"], eps)
    L = len(ids)
    inv_freq = np.array([1.0 / 20000.0 ** (2 * j / d) for j in range(d // 2)])
    angle = np.array([[pos * f for f in inv_freq] for pos in range(L)])
    cos, sin = np.cos(np.concatenate([angle, angle], 1)), np.sin(np.concatenate([angle, angle], 1))

    def rope(x: np.ndarray) -> np.ndarray:  # x: [L, D]
        return x * cos + np.concatenate([-x[:, d // 2 :], x[:, : d // 2]], 1) * sin

    for i in range(cfg.num_layers):
        lp = f"{p}encoder.layers.{i}."
        qkv = h @ merged(f"encoder.layers.{i}.mixer.Wqkv", False).T + raw[lp + "mixer.Wqkv.bias"]
        heads_out = []
        for head in range(heads):
            q = rope(qkv[:, head * d : (head + 1) * d])
            k = rope(qkv[:, cfg.hidden_size + head * d : cfg.hidden_size + (head + 1) * d])
            v = qkv[:, 2 * cfg.hidden_size + head * d : 2 * cfg.hidden_size + (head + 1) * d]
            heads_out.append(_softmax(q @ k.T / math.sqrt(d)) @ v)
        attn = np.concatenate(heads_out, 1) @ merged(f"encoder.layers.{i}.mixer.out_proj", False).T + raw[lp + "mixer.out_proj.bias"]
        h = _ln(h + attn, raw[lp + "norm1.weight"], raw[lp + "norm1.bias"], eps)
        x = h @ merged(f"encoder.layers.{i}.mlp.fc1", False).T + raw[lp + "mlp.fc1.bias"]
        x = 0.5 * x * (1 + _erf(x / math.sqrt(2)))
        x = x @ merged(f"encoder.layers.{i}.mlp.fc2", False).T + raw[lp + "mlp.fc2.bias"]
        h = _ln(h + x, raw[lp + "norm2.weight"], raw[lp + "norm2.bias"], eps)
    return h.mean(0)


def numpy_vision(raw: dict[str, np.ndarray], cfg, image: np.ndarray) -> np.ndarray:
    """Spec 3 and 3.1 for one image [3, S, S]."""
    v, width, patch, grid, d = "vision_model.", cfg.width, cfg.patch_size, cfg.grid_size, cfg.head_width
    crop = image[:, : grid * patch, : grid * patch]  # the last S % patch rows/cols are never seen
    patches = crop.reshape(3, grid, patch, grid, patch).transpose(1, 3, 0, 2, 4).reshape(grid * grid, -1)
    x = patches @ raw[v + "patch_embed.proj.weight"].reshape(width, -1).T + raw[v + "patch_embed.proj.bias"]
    x = np.concatenate([raw[v + "cls_token"][0], x], 0) + raw[v + "pos_embed"][0]
    # RoPE: f_k = 1/10000^(2k/(D/2)); t_i = i/grid*16; channel 2k and 2k+1 share f_k;
    # first D/2 channels follow the patch row, the rest the column.
    half = d // 2
    f = np.array([1.0 / 10000.0 ** (2 * k / half) for k in range(half // 2)])
    t = np.arange(grid) / grid * cfg.pt_hw_seq_len
    angles = np.zeros((grid * grid, d))
    for r in range(grid):
        for c in range(grid):
            for k in range(half // 2):
                angles[r * grid + c, 2 * k] = angles[r * grid + c, 2 * k + 1] = t[r] * f[k]
                angles[r * grid + c, half + 2 * k] = angles[r * grid + c, half + 2 * k + 1] = t[c] * f[k]

    def rope(z: np.ndarray) -> np.ndarray:  # pairs (z0, z1) -> (z0 c - z1 s, z1 c + z0 s), CLS untouched
        out = z.copy()
        body, cs, sn = z[1:], np.cos(angles), np.sin(angles)
        out[1:, 0::2] = body[:, 0::2] * cs[:, 0::2] - body[:, 1::2] * sn[:, 0::2]
        out[1:, 1::2] = body[:, 1::2] * cs[:, 1::2] + body[:, 0::2] * sn[:, 1::2]
        return out

    eps = 1e-6
    for i in range(cfg.layers):
        b = f"{v}blocks.{i}."
        y = _ln(x, raw[b + "norm1.weight"], raw[b + "norm1.bias"], eps)
        q = y @ raw[b + "attn.q_proj.weight"].T + raw[b + "attn.q_bias"]
        k = y @ raw[b + "attn.k_proj.weight"].T  # no k bias
        val = y @ raw[b + "attn.v_proj.weight"].T + raw[b + "attn.v_bias"]
        outs = []
        for head in range(cfg.num_heads):
            sl = slice(head * d, (head + 1) * d)
            outs.append(_softmax(rope(q[:, sl]) * d**-0.5 @ rope(k[:, sl]).T) @ val[:, sl])
        attn = _ln(np.concatenate(outs, 1), raw[b + "attn.inner_attn_ln.weight"], raw[b + "attn.inner_attn_ln.bias"], eps)
        x = x + attn @ raw[b + "attn.proj.weight"].T + raw[b + "attn.proj.bias"]
        y = _ln(x, raw[b + "norm2.weight"], raw[b + "norm2.bias"], eps)
        g = y @ raw[b + "mlp.w1.weight"].T + raw[b + "mlp.w1.bias"]
        u = y @ raw[b + "mlp.w2.weight"].T + raw[b + "mlp.w2.bias"]
        hidden = _ln(g / (1 + np.exp(-g)) * u, raw[b + "mlp.ffn_ln.weight"], raw[b + "mlp.ffn_ln.bias"], eps)
        x = x + hidden @ raw[b + "mlp.w3.weight"].T + raw[b + "mlp.w3.bias"]
    return _ln(x, raw[v + "norm.weight"], raw[v + "norm.bias"], eps)[0]


@pytest.fixture(scope="module")
def raw_weights(tiny_checkpoint: Path) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) for k, v in load_file(str(tiny_checkpoint / WEIGHTS_FILE)).items()}


def test_text_reference_matches_the_spec(tiny_checkpoint: Path, raw_weights: dict[str, np.ndarray]) -> None:
    cfg = load_clip_config(tiny_checkpoint / "config.json")
    model = load_reference(resolve_source(str(tiny_checkpoint)), "text", cfg)
    sequences = [[0, 17, 220, 5, 900, 2], [0, *range(40, 75), 2]]
    pad = cfg.text.pad_token_id
    ids = torch.full((2, 37), pad, dtype=torch.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
    with torch.no_grad():
        ours = model(ids).double().numpy()  # mask derived from the pad id, as upstream
    for row, seq in enumerate(sequences):
        expected = numpy_text(raw_weights, cfg.text, seq)
        assert np.abs(_unit(ours[row]) - _unit(expected)).max() < 1e-5
        assert np.abs(ours[row] - expected).max() < 1e-4


def test_vision_reference_matches_the_spec(tiny_checkpoint: Path, raw_weights: dict[str, np.ndarray]) -> None:
    cfg = load_clip_config(tiny_checkpoint / "config.json")
    model = load_reference(resolve_source(str(tiny_checkpoint)), "vision", cfg)
    image = np.random.default_rng(1).standard_normal((3, 512, 512))
    with torch.no_grad():
        ours = model(torch.from_numpy(image[None].astype(np.float32))).double().numpy()[0]
    expected = numpy_vision(raw_weights, cfg.vision, image)
    assert np.abs(_unit(ours) - _unit(expected)).max() < 1e-5
    assert np.abs(ours - expected).max() < 1e-4


def test_unseen_border_pixels_do_not_matter(tiny_checkpoint: Path) -> None:
    """512 = 36*14 + 8: the last 8 rows/cols never reach a patch."""
    model = load_reference(resolve_source(str(tiny_checkpoint)), "vision")
    image = torch.randn(1, 3, 512, 512)
    changed = image.clone()
    changed[..., 504:, :] = 5.0
    changed[..., :, 504:] = -5.0
    with torch.no_grad():
        assert torch.equal(model(image), model(changed))
