"""The adapter_depthanybase pixel encoder (spec section 4) on the tiny config, plus the full-size
state-dict layout against the shared manifest (built on the meta device, never run)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s3rt.configs import TINY, ViTAdapterConfig
from s3rt.errors import ShapeError
from s3rt.export.model.vit_adapter import (
    DWConv,
    MSDeformAttn,
    ViTAdapterEncoder,
    adapter_reference_points,
    deform_sample,
)

from conftest import SPEC  # noqa: E402 - honours S3RT_SHARED like every other test
MANIFEST = SPEC / "state_dict_adapter_depthanybase.json"
H, W = 64, 96                      # tiny test frame: h x w = 4 x 6 tokens


def _tiny(seed: int = 0) -> ViTAdapterEncoder:
    torch.manual_seed(seed)
    enc = ViTAdapterEncoder(TINY.vit).eval()
    # Non-trivial BN statistics, so the test sees the running stats being used.
    with torch.no_grad():
        for bn in (enc.norm1, enc.norm2, enc.norm3):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return enc


# ------------------------------------------------------------------------------------------
# 1. deformable sampling vs a naive bilinear sampler written from the spec's formula
# ------------------------------------------------------------------------------------------

def _naive_deform_sample(value: np.ndarray, loc: np.ndarray, weights: np.ndarray, h: int, w: int) -> np.ndarray:
    """value (B, P, M, D), loc (B, Lq, M, K, 2), weights (B, Lq, M, K) -> (B, Lq, M*D), float64.

    Spec 4.4: px = loc_x * w - 0.5, py = loc_y * h - 0.5, bilinear, zeros outside the map.
    """
    value = value.astype(np.float64)
    b, _, m, d = value.shape
    lq, k = loc.shape[1], loc.shape[3]
    out = np.zeros((b, lq, m, d))
    for bi in range(b):
        for mi in range(m):
            vmap = value[bi, :, mi, :].reshape(h, w, d)
            for qi in range(lq):
                for ki in range(k):
                    px = float(loc[bi, qi, mi, ki, 0]) * w - 0.5
                    py = float(loc[bi, qi, mi, ki, 1]) * h - 0.5
                    x0, y0 = math.floor(px), math.floor(py)
                    fx, fy = px - x0, py - y0
                    sample = np.zeros(d)
                    for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
                        for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                            if 0 <= yy < h and 0 <= xx < w:
                                sample += wy * wx * vmap[yy, xx]
                    out[bi, qi, mi] += float(weights[bi, qi, mi, ki]) * sample
    return out.reshape(b, lq, m * d)


def test_deform_sample_matches_naive_bilinear():
    g = torch.Generator().manual_seed(1)
    b, h, w, m, d, lq, k = 2, 4, 6, 3, 5, 17, 4
    value = torch.randn(b, h * w, m, d, generator=g)
    loc = torch.rand(b, lq, m, k, 2, generator=g) * 1.6 - 0.3          # [-0.3, 1.3]: many outside
    loc[0, 0, 0, 0] = torch.tensor([-0.5, 1.5])                         # entirely off the map
    loc[0, 0, 0, 1] = torch.tensor([0.5 / w, 0.5 / h])                  # exactly on pixel (0, 0)
    weights = torch.rand(b, lq, m, k, generator=g).softmax(-1)
    got = deform_sample(value, loc, weights, h=h, w=w)
    want = _naive_deform_sample(value.numpy(), loc.numpy(), weights.numpy(), h, w)
    assert ((loc < 0) | (loc > 1)).any()
    assert got.shape == (b, lq, m * d)
    assert np.abs(got.numpy() - want).max() < 1e-5


def test_msdeform_attn_module_matches_spec():
    """Offsets in stride-16 cells for every query, ref = own cell centre, softmax over points."""
    torch.manual_seed(2)
    h, w, dim, m, k = 2, 4, 24, 4, 4
    attn = MSDeformAttn(dim=dim, heads=m, points=k).eval()
    with torch.no_grad():
        attn.sampling_offsets.weight.mul_(8.0)                          # push many points off the map
    lq = 5 * h * w
    query, feat = torch.randn(1, lq, dim), torch.randn(1, h * w, dim)
    ref = adapter_reference_points(h, w)
    with torch.no_grad():
        got = attn(query, ref, feat, h=h, w=w)
        value = attn.value_proj(feat).view(1, h * w, m, dim // m)       # (1, P, C) -> (1, P, M, D)
        off = attn.sampling_offsets(query).view(1, lq, m, k, 2)         # (1, Lq, M*K*2) -> (1, Lq, M, K, 2)
        a = attn.attention_weights(query).view(1, lq, m, k).softmax(-1)  # (1, Lq, M*K) -> (1, Lq, M, K)
    ref_np = ref.numpy()[:, :, None, None, :]
    loc = ref_np + off.numpy() / np.array([w, h], dtype=np.float32)
    assert ((loc < 0) | (loc > 1)).mean() > 0.1
    sampled = _naive_deform_sample(value.numpy(), loc, a.numpy(), h, w)
    proj_w, proj_b = (t.detach().numpy().astype(np.float64) for t in (attn.output_proj.weight, attn.output_proj.bias))
    want = sampled @ proj_w.T + proj_b
    assert np.abs(got.numpy() - want).max() < 1e-5


def test_reference_points_are_cell_centres():
    h, w = 3, 4
    ref = adapter_reference_points(h, w)[0]
    assert ref.shape == (5 * h * w, 2)
    r, q = 4, 5                                                         # a stride-8 token
    assert torch.allclose(ref[r * 2 * w + q], torch.tensor([(q + 0.5) / (2 * w), (r + 0.5) / (2 * h)]))
    r, q = 2, 1                                                         # a stride-16 token
    assert torch.allclose(ref[4 * h * w + r * w + q], torch.tensor([(q + 0.5) / w, (r + 0.5) / h]))


def test_dwconv_splits_like_reference():
    """n = Lq // 20: the first 16n tokens form the 2h x 2w grid, the next 4n the h x w grid."""
    torch.manual_seed(3)
    h, w, ch = 2, 6, 5
    conv = DWConv(dim=ch)
    x = torch.randn(2, 5 * h * w, ch)
    n = x.shape[1] // 20
    k = conv.dwconv
    y8 = k(x[:, :16 * n].transpose(1, 2).reshape(2, ch, 2 * h, 2 * w)).flatten(2).transpose(1, 2)
    y16 = k(x[:, 16 * n:20 * n].transpose(1, 2).reshape(2, ch, h, w)).flatten(2).transpose(1, 2)
    assert torch.equal(conv(x, h=h, w=w), torch.cat([y8, y16], dim=1))


# ------------------------------------------------------------------------------------------
# 2. state-dict layout of the full-size encoder against the shared manifest
# ------------------------------------------------------------------------------------------

def test_state_dict_matches_manifest():
    if not MANIFEST.is_file():
        pytest.skip(f"shared manifest not found at {MANIFEST} (tests read ../shared at run time; set S3RT_SHARED to override)")
    entries = json.loads(MANIFEST.read_text())["entries"]
    prefix = "pixel_encoder."
    want = {e["name"][len(prefix):]: tuple(e["shape"]) for e in entries if e["name"].startswith(prefix)}
    kinds = {e["name"][len(prefix):]: e["kind"] for e in entries if e["name"].startswith(prefix)}
    with torch.device("meta"):                                          # shapes only, no 100M-parameter init
        enc = ViTAdapterEncoder(ViTAdapterConfig())
    got = {name: tuple(t.shape) for name, t in enc.state_dict().items()}
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"
    wrong = {n: (got[n], want[n]) for n in want if got[n] != want[n]}
    assert not wrong, f"shape mismatches (got, want): {dict(list(wrong.items())[:5])}"
    assert list(got) == list(want), "state-dict order differs from the reference"
    params = {n for n, _ in enc.named_parameters()}
    assert params == {n for n, kind in kinds.items() if kind == "parameter"}


# ------------------------------------------------------------------------------------------
# 3. end-to-end shapes, finiteness, determinism on the tiny config
# ------------------------------------------------------------------------------------------

def test_tiny_shapes_finite_deterministic():
    enc = _tiny()
    x = torch.randn(1, 3, H, W)
    h, w, c = H // 16, W // 16, TINY.vit.dim
    with torch.no_grad():
        tokens = enc.forward_tokens(x)
        f16, f8, f4 = enc.forward_adapter(x, tokens)
        again = enc(x)
        tokens_pos = enc.forward_tokens(x, enc.interpolated_pos_embed(h, w))
    assert len(tokens) == 4 and all(t.shape == (1, 1 + h * w, c) for t in tokens)
    assert f16.shape == (1, c, h, w) and f8.shape == (1, c, 2 * h, 2 * w) and f4.shape == (1, c, 4 * h, 4 * w)
    for f in (f16, f8, f4):
        assert torch.isfinite(f).all()
    for a, b in zip((f16, f8, f4), again):
        assert torch.equal(a, b)
    for a, b in zip(tokens, tokens_pos):
        assert torch.equal(a, b)
    # Groups differ (blocks actually ran) and the adapter output depends on the last group.
    assert not torch.equal(tokens[0], tokens[3])
    with torch.no_grad():
        moved = enc.forward_adapter(x, tokens[:3] + [tokens[3] + 1.0])
    assert not torch.equal(moved[0], f16)


def test_rejects_sizes_not_multiple_of_32():
    enc = _tiny()
    with pytest.raises(ShapeError, match="multiples of 32"):
        enc(torch.zeros(1, 3, 48, 96))
    with pytest.raises(ShapeError, match="pos_embed"):
        enc.forward_tokens(torch.zeros(1, 3, H, W), torch.zeros(1, 5, TINY.vit.dim))


# ------------------------------------------------------------------------------------------
# 4. position-embedding interpolation
# ------------------------------------------------------------------------------------------

def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
    def near(x: float) -> float:                                        # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:                                         # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def test_pos_embed_identity_at_native_grid():
    enc = _tiny()
    g = TINY.vit.pos_grid
    assert torch.equal(enc.interpolated_pos_embed(g, g), enc.vit_module.pos_embed)


def test_pos_embed_uses_scale_factor_semantics():
    enc = _tiny()
    g, c = TINY.vit.pos_grid, TINY.vit.dim
    pos = enc.vit_module.pos_embed.detach()
    grid = pos[:, 1:].reshape(1, g, g, c).permute(0, 3, 1, 2)           # (1, G*G, C) -> (1, C, G, G)
    for h, w in ((4, 6), (9, 3)):
        with torch.no_grad():
            got = enc.interpolated_pos_embed(h, w)
        assert got.shape == (1, 1 + h * w, c)
        assert torch.equal(got[:, 0], pos[:, 0])
        want = F.interpolate(grid, scale_factor=((h + 0.1) / g, (w + 0.1) / g), mode="bicubic",
                             align_corners=False)
        want = want.permute(0, 2, 3, 1).reshape(1, h * w, c)            # (1, C, h, w) -> (1, h, w, C) -> (1, P, C)
        assert torch.equal(got[:, 1:], want)
        by_size = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        by_size = by_size.permute(0, 2, 3, 1).reshape(1, h * w, c)      # (1, C, h, w) -> (1, P, C)
        assert (got[:, 1:] - by_size).abs().max() > 1e-3                # sizes alone give other numbers

    # One value by hand: output (i, j) reads grid coordinate (i + 0.5) * G / (h + 0.1) - 0.5.
    h, w, i, j, ch = 4, 6, 3, 1, 7
    got = enc.interpolated_pos_embed(h, w).detach()[0, 1 + i * w + j, ch].item()
    src = grid[0, ch].double().numpy()
    sy = (i + 0.5) * g / (h + 0.1) - 0.5
    sx = (j + 0.5) * g / (w + 0.1) - 0.5
    y0, x0 = math.floor(sy), math.floor(sx)
    wy, wx = _cubic_weights(sy - y0), _cubic_weights(sx - x0)
    clamp = lambda v: min(max(v, 0), g - 1)                             # noqa: E731 - border taps repeat
    manual = sum(wy[a] * wx[b] * src[clamp(y0 - 1 + a), clamp(x0 - 1 + b)] for a in range(4) for b in range(4))
    assert abs(got - manual) < 1e-5


# ------------------------------------------------------------------------------------------
# 5. ONNX export (TorchScript tracer, opset 17) and ONNX Runtime parity
# ------------------------------------------------------------------------------------------

class _Tokens(torch.nn.Module):
    def __init__(self, enc: ViTAdapterEncoder, pos_embed: torch.Tensor) -> None:
        super().__init__()
        self.enc = enc
        self.register_buffer("pos_embed", pos_embed)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.enc.forward_tokens(image, self.pos_embed))


class _Adapter(torch.nn.Module):
    def __init__(self, enc: ViTAdapterEncoder) -> None:
        super().__init__()
        self.enc = enc

    def forward(self, image, t0, t1, t2, t3):
        return self.enc.forward_adapter(image, [t0, t1, t2, t3])


def _onnx_run(module: torch.nn.Module, args: tuple, names: list[str]) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    buf = io.BytesIO()
    torch.onnx.export(module, args, buf, dynamo=False, opset_version=17, input_names=names)
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    return session.run(None, {n: a.numpy() for n, a in zip(names, args)})


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_onnx_export_matches_torch():
    enc = _tiny()
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        pos = enc.interpolated_pos_embed(H // 16, W // 16)
        tokens = enc.forward_tokens(x, pos)
        feats = enc.forward_adapter(x, tokens)

    got = _onnx_run(_Tokens(enc, pos), (x,), ["image"])
    assert len(got) == 4
    for a, b in zip(got, tokens):
        assert a.shape == tuple(b.shape) and np.abs(a - b.numpy()).max() < 1e-4

    got = _onnx_run(_Adapter(enc), (x, *tokens), ["image"] + [f"vit_tokens_{i}" for i in range(4)])
    assert len(got) == 3
    for a, b in zip(got, feats):
        assert a.shape == tuple(b.shape) and np.abs(a - b.numpy()).max() < 1e-4
