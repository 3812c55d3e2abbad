"""Why two backends part ways over a long clip: one-step differences vs growth through the recurrence.

    python -m s3rt.benchmarks.parity_diagnosis [--weights W] [--mem-every 1,5] [--frames 100]

On the 100-frame parity clip (64x96, objects 3 and 4 added on frames 35 and 70) it measures, per
`mem_every`:

1. one step, identical inputs: the torch tracker drives the clip and every graph call is also run
   by ONNX Runtime on a copy of the same inputs. Max |d| per graph, and the discrete decisions
   counted where they differ: top-k membership of the memory readout (columns whose chosen token
   set differs among finite scores), the DQ-CA foreground mask and the DQ-CA per-head argmax pick.
2. whole clip, lockstep: torch and ONNX Runtime trackers each on their own state; per-frame argmax
   agreement and the max |d| of the sensory state.
3. the same with ONNX Runtime replaced by torch plus a relative noise of `--eps` (default 1e-7,
   about one fp32 ulp) on every graph output: if this diverges like (2), the divergence is the
   recurrence amplifying rounding, not a difference between the backends.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# the parity clip of tests/test_trained_parity.py
FRAMES, HEIGHT, WIDTH, CLIP_SEED = 100, 64, 96, 2024
ENTER = {3: 35, 4: 70}            # object id -> frame on which its mask is given


def parity_clip(num_frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH,
                seed: int = CLIP_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T,H,W,3) uint8 and ground truth (T,H,W): objects 1-2 from frame 0, 3 and 4 enter late."""
    from s3rt.training.synthetic_vos import ClipSpec, generate_clip

    spec = ClipSpec(num_frames=num_frames, height=height, width=width, num_objects=4, num_distractors=1,
                    enter_after=(ENTER[4], ENTER[3]))          # the last targets enter late
    return generate_clip(spec, seed=seed)


def clip_inputs(masks: np.ndarray, t: int) -> tuple[np.ndarray | None, list[int] | None]:
    """The (mask, object_ids) given to tracker.step on frame t: objects 1-2 first, then one per entry."""
    if t == 0:
        return np.where(masks[0] <= 2, masks[0], 0), None
    for k, e in ENTER.items():
        if t == e:
            return np.where(masks[t] == k, k, 0), [k]
    return None, None


def run_clip(tracker: object, frames: np.ndarray, masks: np.ndarray) -> list[np.ndarray]:
    """Stream the clip; per frame the (N+1, H, W) probabilities."""
    out = []
    for t, frame in enumerate(frames):
        mask, ids = clip_inputs(masks, t)
        out.append(tracker.step(frame, mask=mask, object_ids=ids, end=t == len(frames) - 1).probabilities)  # type: ignore[attr-defined]
    return out


def _decision_sessions(manifest: object) -> dict:
    """ORT sessions of memory_readout and query_attention that also output their discrete decisions
    (found by op type: TopK indices; GreaterOrEqual = foreground; ArgMax = DQ-CA pick)."""
    import onnx
    import onnxruntime as ort

    wanted = {"memory_readout": ("TopK",), "query_attention": ("GreaterOrEqual", "ArgMax")}
    sessions = {}
    for graph, ops in wanted.items():
        model = onnx.load(manifest.path(graph))  # type: ignore[attr-defined]
        extra = {op: [n.output[1] if op == "TopK" else n.output[0] for n in model.graph.node if n.op_type == op]
                 for op in ops}
        for names in extra.values():
            for name in names:
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        sessions[graph] = (sess, extra)
    return sessions


def one_step(weights: str | None, settings: object, frames: np.ndarray, masks: np.ndarray) -> dict:
    """Part 1: max |d| per graph output and decision flips with identical inputs at every call."""
    import torch

    from s3rt.export.model.memory import similarity
    from s3rt.kernels.masked_query_attention.reference import masked_query_gather_torch as masked_query_gather
    from s3rt.export.onnx_export import export_model
    from s3rt.runtime.backends.pytorch.backend import TorchBackend
    from s3rt.runtime.tracker import Tracker

    h, w = frames.shape[1:3]
    with tempfile.TemporaryDirectory() as tmp:
        manifest, _ = export_model("tiny", out_dir=tmp, height=h, width=w, weights=weights, check_parity=False)
        plain = {g: _session(manifest.path(g)) for g in manifest.graphs}
        decisions = _decision_sessions(manifest)
    rec: dict[str, list] = {}
    worst: dict[str, float] = {}
    flips = {"topk": [0, 0], "foreground": [0, 0], "pick": [0, 0]}   # [differing, total]

    def gather(pixel, query_key, foreground, num_heads):  # noqa: ANN001, ANN202 - same signature as the model's
        g, index = masked_query_gather(pixel, query_key, foreground, num_heads)
        rec.setdefault("foreground", []).append(foreground)
        rec.setdefault("pick", []).append(index)
        return g, index

    class Shadow(TorchBackend):
        def _open(self) -> None:
            super()._open()
            for block in self._model.object_transformer.blocks:
                block.read_from_pixel.gather_fn = gather

        def run(self, graph: str, inputs: Mapping, outputs: Mapping) -> None:
            rec.clear()
            feed = {k: v.detach().numpy().copy() for k, v in inputs.items()}
            sess, extra = decisions.get(graph, (plain[graph], {}))
            res = sess.run(None, feed)
            super().run(graph, inputs, outputs)
            for (name, dst), got in zip(outputs.items(), res):
                worst[f"{graph}.{name}"] = max(worst.get(f"{graph}.{name}", 0.0),
                                               float(np.abs(dst.numpy() - got).max()) if got.size else 0.0)
            more = res[len(outputs):]
            if graph == "memory_readout":
                with torch.inference_mode():
                    _count_topk(flips["topk"], inputs, more[0], similarity, torch)
            elif graph == "query_attention":
                nfg = len(extra["GreaterOrEqual"])
                for key, mine, theirs in (("foreground", rec["foreground"], more[:nfg]),
                                          ("pick", rec["pick"], more[nfg:])):
                    for a, b in zip(mine, theirs):
                        flips[key][0] += int((a.numpy().reshape(-1) != b.reshape(-1)).sum())
                        flips[key][1] += a.numel()

    with Shadow("tiny", weights=weights) as backend:
        run_clip(Tracker(backend, settings, max_short_side=None), frames, masks)
    return {"max_abs": worst, "flips": flips}


def _count_topk(acc: list[int], inputs: Mapping, ort_index: np.ndarray, similarity, torch) -> None:  # noqa: ANN001
    """Columns (bucket, query pixel) whose top-k token set differs, counting only finite scores
    (a bucket with fewer than k valid tokens pads its top-k with -inf picks of weight 0)."""
    sim = similarity(inputs["mem_key"], inputs["mem_shrinkage"], inputs["key"], inputs["selection"])  # (1, T, P)
    valid = inputs["bucket_valid"]                                              # (NB, S)
    nb, s = valid.shape
    t, p = sim.shape[1:]
    masked = torch.where(valid.view(nb, s, 1, 1), sim.view(1, s, t // s, p), float("-inf")).reshape(nb, t, p)
    k = ort_index.shape[1]
    idx = torch.topk(masked, k=k, dim=1).indices.numpy()                          # (NB, k, P)
    finite = np.isfinite(np.take_along_axis(masked.numpy(), idx, axis=1))
    for b in range(nb):
        for j in range(p):
            mine = set(idx[b, finite[b, :, j], j].tolist())
            scores = masked.numpy()[b, ort_index[b, :, j], j]
            theirs = set(ort_index[b, np.isfinite(scores), j].tolist())
            acc[0] += int(mine != theirs)
            acc[1] += 1


def _session(path: Path):  # noqa: ANN202
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def lockstep(weights: str | None, settings: object, frames: np.ndarray, masks: np.ndarray, *,
             eps: float | None = None, seed: int = 1) -> dict:
    """Parts 2-3: torch vs ONNX Runtime (eps None) or vs torch with relative output noise eps."""
    import torch

    from s3rt.export.onnx_export import export_model
    from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
    from s3rt.runtime.backends.pytorch.backend import TorchBackend
    from s3rt.runtime.compare import argmax_agreement
    from s3rt.runtime.tracker import Tracker

    class Noisy(TorchBackend):
        """torch with every float output scaled by (1 + eps * N(0, 1)): a stand-in for rounding."""

        gen = torch.Generator().manual_seed(seed)

        def run(self, graph: str, inputs: Mapping, outputs: Mapping) -> None:
            super().run(graph, inputs, outputs)
            for dst in outputs.values():
                if dst.dtype == torch.float32:
                    dst.mul_(1 + eps * torch.randn(dst.shape, generator=self.gen))

    h, w = frames.shape[1:3]
    with tempfile.TemporaryDirectory() as tmp:
        if eps is None:
            export_model("tiny", out_dir=tmp, height=h, width=w, weights=weights, check_parity=False)
            other = OnnxRuntimeBackend(tmp, threads=1)
        else:
            other = Noisy("tiny", weights=weights)
        with TorchBackend("tiny", weights=weights) as ref_backend, other:
            a = Tracker(ref_backend, settings, max_short_side=None)
            b = Tracker(other, settings, max_short_side=None)
            agree, sensory = [], []
            for t, frame in enumerate(frames):
                mask, ids = clip_inputs(masks, t)
                end = t == len(frames) - 1
                pa = a.step(frame, mask=mask, object_ids=ids, end=end).probabilities
                pb = b.step(frame, mask=mask, object_ids=ids, end=end).probabilities
                agree.append(argmax_agreement(pa, pb))
                sa, sb = (np.asarray(x.sensory.detach() if hasattr(x.sensory, "detach") else x.sensory) for x in (a, b))
                sensory.append(float(np.abs(sa - sb).max()))
    return {"agreement": agree, "sensory_max_abs": sensory}


def held_out_jf(weights: str | None, mem_every: int, clips: int = 8) -> float:
    """J&F of the torch tracker on the demo's held-out clips (30 frames, 96x160) at this mem_every."""
    from s3rt.configs import InferenceConfig
    from s3rt.runtime.backends.pytorch.backend import TorchBackend
    from s3rt.runtime.tracker import Tracker
    from s3rt.training.evaluate import held_out_clips, jf_score, track

    data = held_out_clips(clips, num_frames=30, height=96, width=160)
    with TorchBackend("tiny", weights=weights) as backend:
        preds = [track(lambda: Tracker(backend, InferenceConfig(mem_every=mem_every), max_short_side=None), c)[0]
                 for c in data]
    return jf_score([c.masks for c in data], preds)["J&F"]


def _summary(name: str, r: dict) -> str:
    ag, se = np.array(r["agreement"]), r["sensory_max_abs"]
    bad = np.nonzero(ag < 0.999)[0]
    first = f"first frame < 99.9 %: {bad[0]}" if len(bad) else "every frame >= 99.9 %"
    return (f"  {name}: argmax agreement mean {100 * ag.mean():.3f} %, worst {100 * ag.min():.3f} %, {first}; "
            f"sensory max |d| at frames 10/30/60/99: " + " ".join(f"{se[i]:.0e}" for i in (10, 30, 60, 99) if i < len(se)))


def main(argv: list[str] | None = None) -> int:
    from s3rt.configs import InferenceConfig
    from s3rt.training.trained import has_trained_weights, trained_weights

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="tiny state dict (default: the shipped trained weights)")
    p.add_argument("--mem-every", default="1,5", help="comma list of tracker mem_every values (default 1,5)")
    p.add_argument("--frames", type=int, default=FRAMES, help="clip length (default 100)")
    p.add_argument("--eps", type=float, default=1e-7, help="relative noise of the torch-vs-torch run (default 1e-7)")
    p.add_argument("--jf", action="store_true", help="also score held-out J&F at each mem_every (slower)")
    args = p.parse_args(argv)
    weights = args.weights or (str(trained_weights("tiny")) if has_trained_weights("tiny") else None)
    frames, masks = parity_clip(args.frames)
    print(f"parity clip {args.frames} frames {HEIGHT}x{WIDTH}, objects 3/4 added on frames {ENTER[3]}/{ENTER[4]}; "
          f"weights {weights or 'seeded random'}")
    for mem_every in (int(x) for x in args.mem_every.split(",")):
        settings = dataclasses.replace(InferenceConfig(), mem_every=mem_every)
        print(f"mem_every {mem_every}:")
        one = one_step(weights, settings, frames, masks)
        big = sorted(one["max_abs"].items(), key=lambda kv: -kv[1])[:4]
        print("  one step, identical inputs: largest max |d| " + ", ".join(f"{k} {v:.1e}" for k, v in big))
        print("  decision flips (differing / total): " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in one["flips"].items()))
        print(_summary("torch vs ONNX Runtime", lockstep(weights, settings, frames, masks)))
        print(_summary(f"torch vs torch + {args.eps:g} relative noise", lockstep(weights, settings, frames, masks,
                                                                                  eps=args.eps)))
        if args.jf:
            print(f"  held-out J&F (8 x 30 frames, 96x160, torch): {held_out_jf(weights, mem_every):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
