"""Train the tiny S3 on synthetic clips: `python -m s3rt.training.train --help` (or `s3rt train`).

Adam with cosine decay, one clip per step, frame-0 masks given and CE + dice on the later
frames. Checkpoints (model, optimiser, step, loss log) every --save-every steps and at the end
or at the --max-minutes wall limit, so a stopped run continues with --resume. The seed fixes
the model init and the clip sequence (clip i uses seed data_seed + i), so a resumed run sees
the same data as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

DEFAULTS = dict(config="tiny", steps=3000, frames=5, height=96, width=160, lr=1e-3, seed=0, data_seed=1_000_000)


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="python -m s3rt.training.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULTS["config"], help="model config (default tiny)")
    p.add_argument("--out", type=Path, default=Path("train_runs/tiny"), help="run folder: checkpoint, log, loss curve")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="total optimiser steps (sets the lr schedule)")
    p.add_argument("--frames", type=_int_list, default=[DEFAULTS["frames"]], help="frames per training clip (first is "
                   "given); a comma list cycles per step, paired with --mem-every (e.g. --frames 16,8 --mem-every 5,1)")
    p.add_argument("--mem-every", type=_int_list, default=[1], help="memory frame period in the training clip (the "
                   "tracker's mem_every; 1 = every frame); a comma list cycles per step")
    p.add_argument("--height", type=_int_list, default=[DEFAULTS["height"]], help="clip height, multiple of 32; "
                   "a comma list cycles per step")
    p.add_argument("--width", type=_int_list, default=[DEFAULTS["width"]], help="clip width, multiple of 32; "
                   "a comma list cycles per step")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="peak Adam learning rate")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="model init seed")
    p.add_argument("--data-seed", type=int, default=DEFAULTS["data_seed"], help="clip i uses seed data_seed + i")
    p.add_argument("--shrink-cap", type=float, default=30.0, help="memory shrinkage above this is penalised")
    p.add_argument("--shrink-weight", type=float, default=0.0, help="weight of the shrinkage hinge (0 = off)")
    p.add_argument("--save-every", type=int, default=100, help="checkpoint period in steps")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this wall time")
    p.add_argument("--stop-after-step", type=int, default=None, help="stop (with a checkpoint) once this step "
                   "is reached; the lr schedule still follows --steps")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--init", type=Path, default=None, help="start from this run's checkpoint.pt model weights, or "
                   "from a state dict such as the shipped fp16 weights (fresh optimiser and schedule: a second "
                   "training phase)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--export", type=Path, default=None, help="when the run stops, write the fp16 state dict here")
    return p


def _int_list(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def step_schedule(step: int, args: argparse.Namespace) -> tuple[int, int, int, int]:
    """(frames, mem_every, height, width) of the clip at `step`: each option's list cycled."""
    f, m, h, w = (v[step % len(v)] for v in (args.frames, args.mem_every, args.height, args.width))
    return f, m, h, w


def training_clip(index: int, args: argparse.Namespace, frames: int | None = None,
                  size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> frames (T,H,W,3) uint8, first masks (N,H,W) float32, targets (T-1,H,W) int64 in 0..N."""
    from s3rt.training.synthetic_vos import generate_clip, random_spec

    seed = args.data_seed + index
    num_frames = frames if frames is not None else args.frames[0]
    height, width = size if size is not None else (args.height[0], args.width[0])
    spec = random_spec(np.random.default_rng(seed), num_frames=num_frames, height=height, width=width)
    frames, masks = generate_clip(spec, seed)
    ids = [i for i in np.unique(masks[0]) if i and (masks[0] == i).sum() >= 16]
    if not ids:                                     # all targets hidden on frame 0: take the next clip
        return training_clip(index + 10_000_000, args, frames, size)
    remap = np.zeros(256, np.int64)
    remap[ids] = np.arange(1, len(ids) + 1)
    first = np.stack([(masks[0] == i) for i in ids]).astype(np.float32)
    return frames, first, remap[masks[1:]]


def lr_at(step: int, args: argparse.Namespace) -> float:
    warm = 100
    if step < warm:
        return args.lr * (step + 1) / warm
    return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, args.steps - warm)))))


def plot_losses(log: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in log])
    loss = np.array([r["loss"] for r in log])
    win = min(50, len(loss))
    smooth = np.convolve(loss, np.ones(win) / win, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, lw=0.5, alpha=0.4, label="per step")
    ax.plot(steps[win - 1:], smooth, lw=1.5, label=f"mean of {win}")
    ax.set_xlabel("step"); ax.set_ylabel("CE + dice"); ax.set_yscale("log"); ax.legend(); ax.grid(alpha=0.3)
    ax.set_title("tiny S3 on synthetic clips")
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def export_fp16(model, path: Path) -> None:  # noqa: ANN001
    """Compact fp16 state dict (floating tensors halved, others kept), loadable by the strict loader."""
    import torch
    state = {k: (v.half() if v.is_floating_point() else v).clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = args or build_parser().parse_args(argv)
    import torch
    from tqdm import tqdm

    from s3rt.export.model import build_model
    from s3rt.training.clip_model import clip_log_odds, clip_loss, shrinkage_penalty

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / "checkpoint.pt"
    model = build_model(args.config, seed=args.seed)   # seeded init with estimated BN statistics
    model.eval()                                         # BN frozen (statistics as estimated), as Cutie trains
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, log, wall = 0, [], 0.0
    if args.init is not None:
        init = torch.load(args.init, map_location="cpu", weights_only=False)
        model.load_state_dict(init["model"] if "model" in init else init)   # a run's checkpoint or a state dict
    if args.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["optim"])
        step, log, wall = ck["step"], ck["log"], ck["wall_s"]

    def save() -> None:
        torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step, "log": log,
                    "wall_s": wall, "args": {k: str(v) for k, v in vars(args).items()}}, ckpt_path)
        (args.out / "log.json").write_text(json.dumps({"step": step, "wall_s": wall, "log": log[-1:]}, indent=1))
        if log:
            plot_losses(log, args.out / "loss_curve.png")

    start = time.perf_counter() - wall
    bar = tqdm(total=args.steps, initial=step, desc="train", dynamic_ncols=True)
    while step < args.steps and (args.stop_after_step is None or step < args.stop_after_step):
        num_frames, mem_every, height, width = step_schedule(step, args)
        frames, first, targets = training_clip(step, args, num_frames, (height, width))
        images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255          # (T, 3, H, W)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        extras: dict = {}
        outs = clip_log_odds(model, images, torch.from_numpy(first), mem_every=mem_every, extras=extras)
        loss, parts = clip_loss(outs, torch.from_numpy(targets))
        parts["shrink_max"] = float(extras["shrinkage"].detach().max())
        if args.shrink_weight > 0:
            loss = loss + args.shrink_weight * shrinkage_penalty(extras["shrinkage"], args.shrink_cap)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        wall = time.perf_counter() - start
        log.append({"step": step, "loss": float(loss.detach()), **parts, "wall_s": round(wall, 2)})
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", ce=f"{parts['ce']:.3f}", shrink=f"{parts['shrink_max']:.0f}")
        if step % args.save_every == 0:
            save()
        if args.max_minutes is not None and wall > args.max_minutes * 60:
            break
        if args.stop_after_step is not None and step >= args.stop_after_step:
            break
    bar.close()
    save()
    if args.export is not None:
        export_fp16(model, args.export)
    print(f"step {step}/{args.steps}, wall {wall / 60:.1f} min, checkpoint {ckpt_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
