"""Blocks against naive re-statements of the spec (tiny sizes, CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s3rt.export.model import build_model
from s3rt.export.model.common import aggregate_log_odds, aggregate_logits, sinusoid_2d
from s3rt.export.model.memory import similarity, topk_readout
from s3rt.export.model.object_transformer import foreground_from_logits, masked_query_gather


def naive_gather(pixel, query_key, fg, heads):
    """Spec 9.3-9.4.1 with explicit loops."""
    bn, p, c = pixel.shape
    q = query_key.shape[1]
    d = c // heads
    x_hat = pixel / pixel.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    out = torch.zeros(bn, q, c)
    idx = torch.zeros(bn, heads, q, dtype=torch.long)
    for b in range(bn):
        for j in range(q):
            allowed = fg[b] if j < q // 2 else ~fg[b]
            if not allowed.any():
                allowed = torch.ones_like(allowed)
            for h in range(heads):
                sl = slice(h * d, (h + 1) * d)
                best, best_p = -math.inf, -1
                for x in range(p):
                    if allowed[x]:
                        s = float(x_hat[b, x, sl] @ query_key[b, j, sl])
                        if s > best:
                            best, best_p = s, x
                idx[b, h, j] = best_p
                out[b, j, sl] = x_hat[b, best_p, sl]
    return out, idx


def test_masked_query_gather_matches_loops_including_fully_blocked_rows():
    g = torch.Generator().manual_seed(0)
    bn, p, c, q, heads = 3, 20, 16, 4, 4
    pixel = torch.randn(bn, p, c, generator=g)
    key = F.normalize(torch.randn(bn, q, c, generator=g), dim=-1)
    fg = torch.rand(bn, p, generator=g) > 0.5
    fg[1] = False            # no foreground: the first Q/2 rows are fully blocked -> unblocked
    fg[2] = True             # all foreground: the last Q/2 rows are fully blocked
    got, got_idx = masked_query_gather(pixel, key, fg, heads)
    want, want_idx = naive_gather(pixel, key, fg, heads)
    assert torch.equal(got_idx, want_idx)
    assert torch.allclose(got, want, atol=1e-6)


def test_gather_breaks_ties_on_the_first_index():
    pixel = torch.ones(1, 6, 8)
    key = F.normalize(torch.ones(1, 2, 8), dim=-1)
    fg = torch.tensor([[False, True, True, False, True, False]])
    _, idx = masked_query_gather(pixel, key, fg, 2)
    assert idx[0, :, 0].tolist() == [1, 1]       # foreground query: first foreground pixel
    assert idx[0, :, 1].tolist() == [0, 0]       # background query: first background pixel


def test_foreground_is_the_aggregated_argmax_with_ties():
    logits = torch.tensor([[[[5.0, -5.0]], [[-5.0, -5.0]]]])      # (B=1, N=2, h=1, w=2)
    fg = foreground_from_logits(logits).view(2, 2)
    assert fg[0].tolist() == [True, False]
    assert fg[1].tolist() == [False, False]


def _spec_aggregation_fp64(logits: torch.Tensor) -> torch.Tensor:
    """Spec 10.3 literally, in float64: sigmoid, background product, clamp, log-odds."""
    p = torch.sigmoid(logits.double())
    p = torch.cat([torch.prod(1 - p, dim=1, keepdim=True), p], dim=1).clamp(1e-7, 1 - 1e-7)
    return torch.log(p / (1 - p))


def test_aggregate_logits_is_the_spec_formula_without_fp32_saturation_loss():
    """Logits from -100 to 100 (saturated and near-tied objects included): the fp32 logit-space
    form equals the float64 spec formula to 1e-5 in log-odds; the fp32 probability-space form
    loses up to ~0.4 where sigmoid is within a few ulps of 1 (why backends disagreed there)."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(1, 3, 4000, generator=g) * s for s in (0.5, 3.0, 10.0, 30.0)], dim=-1)
    x = torch.cat([x, torch.tensor([[[-100.0, 100.0, 16.0, 0.0]] * 3]).view(1, 3, 4)], dim=-1)
    ref = _spec_aggregation_fp64(x)
    new = aggregate_logits(x)
    assert new.dtype == torch.float32 and new.shape == (1, 4, x.shape[-1])
    assert float((new.double() - ref).abs().max()) < 1e-5
    probs_new, probs_ref = torch.softmax(new.double(), 1), torch.softmax(ref, 1)
    assert float((probs_new - probs_ref).abs().max()) < 1e-6
    old = aggregate_log_odds(torch.sigmoid(x))              # the former path, fp32 probabilities
    assert float((old.double() - ref).abs().max()) > 0.1


def test_topk_readout_equals_dense_softmax_affinity():
    """Spec 8.1-8.2 with a dense (T, P) affinity: top-k, exp, normalise, scatter, matmul."""
    g = torch.Generator().manual_seed(1)
    ck, cv, s, p, n, k = 8, 6, 3, 10, 2, 7
    mk, key = torch.randn(1, ck, s * p, generator=g), torch.randn(1, ck, p, generator=g)
    ms, sel = 1 + torch.rand(1, 1, s * p, generator=g), torch.rand(1, ck, p, generator=g)
    mv = torch.randn(n, cv, s * p, generator=g)
    sim = similarity(mk, ms, key, sel)
    direct = -((sel[:, :, None, :] * (mk[:, :, :, None] - key[:, :, None, :]) ** 2).sum(1)) * ms[0, 0][:, None] / math.sqrt(ck)
    assert torch.allclose(sim, direct, atol=1e-5)
    valid = torch.tensor([[True, True, True], [True, False, True]])
    bucket = torch.tensor([0, 1])
    got = topk_readout(sim, mv, valid, bucket, k)
    for obj in range(n):
        mask = valid[bucket[obj]].repeat_interleave(p)
        sub = sim[0][mask]                                        # (T_valid, P)
        vals, idx = sub.topk(k, dim=0)
        aff = torch.zeros_like(sub).scatter_(0, idx, vals.exp() / vals.exp().sum(0, keepdim=True))
        want = mv[obj][:, mask] @ aff
        assert torch.allclose(got[obj], want, atol=1e-5)


def test_sinusoid_matches_spec_formula():
    h, w, c = 3, 5, 16
    pe = sinusoid_2d(h, w, c, scale=32, temperature=128).numpy()
    f = 128.0 ** (-np.arange(0, c // 2, 2) / (c // 2))
    r, q = 2, 3
    x, y = q / (w - 1 + 1e-6) * 32, r / (h - 1 + 1e-6) * 32
    want_x = np.stack([np.sin(x * f), np.cos(x * f)], -1).reshape(-1)
    want_y = np.stack([np.sin(y * f), np.cos(y * f)], -1).reshape(-1)
    assert np.allclose(pe[r, q], np.concatenate([want_x, want_y]), atol=1e-5)


@pytest.mark.parametrize("config", ["tiny", "tiny-r50"])
def test_seeded_weights_are_deterministic_and_finite(config):
    a, b, c = build_model(config, seed=3), build_model(config, seed=3), build_model(config, seed=4)
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(x, y), name
    assert any(not torch.equal(x, z) for x, z in zip(a.state_dict().values(), c.state_dict().values()))
    img = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        enc = a.encoder(img)
        ins = (img, *enc) if a.cfg.encoder == "vit_adapter" else enc[:1]
        outs = a.spatial_semantic(*ins)
    assert all(torch.isfinite(o).all() for o in outs)
    assert outs[-2].min() >= 1.0            # shrinkage >= 1
