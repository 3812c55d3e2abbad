"""Differentiable clip forward of S3 for training: the tracker's loop written with growing memory.

Frame 0 gives the masks; every later frame is segmented from memory (the earlier memory
frames, written with the model's own soft prediction as Cutie trains), the sensory state updates
every frame. `mem_every` > 1 trains the deployed loop's gaps (spec 11): between memory frames
the sensory state comes from the decoder's update alone, several frames in a row. Shapes: T frames, N objects, H x W (multiples of 32), h x w = H/16 x W/16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from s3rt.export.model.common import aggregate_logits
from s3rt.export.model.memory import similarity, topk_readout
from s3rt.export.model.s3 import S3Model


def clip_log_odds(model: S3Model, images: Tensor, first_masks: Tensor, *, top_k: int = 30,
                  mem_every: int = 1, extras: dict[str, Tensor] | None = None) -> list[Tensor]:
    """images (T,3,H,W) in [0,1], first_masks (N,H,W) {0,1} -> per later frame (1,N+1,H,W) log-odds
    (background first), the tensors whose softmax the deployed model outputs. `extras`, if given,
    receives the clip's memory shrinkage (T,1,P) for the regulariser below."""
    t_len, n = images.shape[0], first_masks.shape[0]
    enc = model.encoder(images)                                   # whole clip in one batch
    f8, f4, pix, key, shrink, sel = model.spatial_semantic(images, *enc)
    h, w = pix.shape[-2:]
    if extras is not None:
        extras["shrinkage"] = shrink
    sensory = images.new_zeros(1, n, model.cfg.sensory_dim, h, w)
    prev = first_masks[None]                                      # (1, N, H, W)
    value, sensory, obj_mem = model.mask_encoder_graph(images[:1], pix[:1], sensory, prev)
    keys, shrinks, values = [key[:1]], [shrink[:1]], [value[0].flatten(2)]
    outs = []
    last_mem = 0
    for t in range(1, t_len):
        mk, ms, mv = torch.cat(keys, 2), torch.cat(shrinks, 2), torch.cat(values, 2)
        sim = similarity(mk, ms, key[t:t + 1], sel[t:t + 1])      # (1, t*P, P)
        valid = torch.ones(1, len(keys), dtype=torch.bool, device=images.device)
        bucket = torch.zeros(n, dtype=torch.long, device=images.device)
        visual = topk_readout(sim, mv, valid, bucket, min(top_k, sim.shape[1])).view(1, n, -1, h, w)
        fused = model.pixel_fuser(pix[t:t + 1], visual, sensory, prev)
        readout = model.object_transformer(fused, obj_mem)
        logits, sensory = model.mask_decoder(f8[t:t + 1], f4[t:t + 1], readout, sensory)
        log_odds = aggregate_logits(logits, dim=1)                    # (1, N+1, H/4, W/4)
        log_odds = F.interpolate(log_odds, scale_factor=4.0, mode="bilinear", align_corners=False)
        outs.append(log_odds)
        prev = torch.softmax(log_odds, dim=1)[:, 1:]
        if t < t_len - 1 and t - last_mem >= mem_every:              # a memory frame (tracker rule)
            last_mem = t
            value, sensory, summaries = model.mask_encoder_graph(images[t:t + 1], pix[t:t + 1], sensory, prev)
            keys.append(key[t:t + 1]); shrinks.append(shrink[t:t + 1]); values.append(value[0].flatten(2))
            obj_mem = obj_mem + summaries
    return outs


def clip_loss(log_odds: list[Tensor], targets: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy + soft dice (foreground objects) averaged over frames; targets (T-1,H,W) int64
    in 0..N."""
    ce_total, dice_total = 0.0, 0.0
    for lo, tgt in zip(log_odds, targets):
        ce_total = ce_total + F.cross_entropy(lo, tgt[None])
        prob = torch.softmax(lo, dim=1)[0, 1:].flatten(1)                     # (N, HW)
        onehot = F.one_hot(tgt, lo.shape[1]).permute(2, 0, 1)[1:].flatten(1).float()
        dice = 1 - (2 * (prob * onehot).sum(1) + 1) / (prob.sum(1) + onehot.sum(1) + 1)
        dice_total = dice_total + dice.mean()
    ce, dice = ce_total / len(log_odds), dice_total / len(log_odds)
    return ce + dice, {"ce": float(ce.detach()), "dice": float(dice.detach())}


def shrinkage_penalty(shrinkage: Tensor, cap: float) -> Tensor:
    """Mean excess of the memory shrinkage over `cap` (hinge). Unchecked, training on clean synthetic
    clips drives shrinkage to ~1e3: similarities reach ~1e6, the top-k softmax turns into a hard
    argmax, and fp32 rounding differences between backends flip near-tied picks (whole-clip
    parity is lost). Below the cap the penalty is zero."""
    return torch.relu(shrinkage - cap).mean()
