"""Accuracy gates per precision on the trained tiny model: J&F and mask IoU vs fp32.

Rows: torch fp32 (the reference), torch bf16 (CPU autocast), torch fp16 (CUDA autocast, only
with a GPU), ONNX Runtime fp32 and ONNX Runtime INT8 (static QDQ quantisation of the exported
graphs, calibrated on generated clips that are not the evaluation clips). Every row tracks the
same held-out clips from the first-frame mask; "IoU vs fp32" compares its masks with torch
fp32's, frame by frame. The ONNX Runtime fp32 and INT8 runs alternate clip by clip in one
process, so their speed ratio is measured side by side.

Gate: J&F drop <= 0.5 pp (0.005) for bf16/fp16. INT8 is reported as measured.

  python -m s3rt.benchmarks.accuracy_gates --markdown gates.md --json gates.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

GATE_PP = 0.5
INT8_GRAPHS_ALL = ("encoder", "spatial_semantic", "memory_readout", "query_attention", "mask_decoder", "mask_encoder")


def _recording_backend(model_dir: Path, store: dict[str, list[dict[str, np.ndarray]]], limit: int):
    """ONNX Runtime backend that keeps copies of each graph's inputs (calibration data)."""
    from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend

    class Recording(OnnxRuntimeBackend):
        def run(self, graph: str, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
            rows = store.setdefault(graph, [])
            if len(rows) < limit:
                rows.append({k: np.array(v, copy=True) for k, v in inputs.items()})
            super().run(graph, inputs, outputs)

    return Recording(model_dir)


def quantize_int8(fp32_dir: Path, int8_dir: Path, calib: dict[str, list[dict[str, np.ndarray]]],
                  graphs: tuple[str, ...]) -> None:
    """Static QDQ INT8 (per-channel int8 weights, int8 activations, MinMax calibration) of `graphs`;
    the other graphs and the manifest are copied unchanged."""
    import shutil

    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from s3rt.runtime.manifest import load_manifest

    class Reader(CalibrationDataReader):
        def __init__(self, rows: list[dict[str, np.ndarray]]) -> None:
            self._it = iter(rows)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    manifest = load_manifest(fp32_dir)
    int8_dir.mkdir(parents=True, exist_ok=True)
    for f in fp32_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, int8_dir / f.name)
    for graph in graphs:
        src = manifest.path(graph)
        quantize_static(str(src), str(int8_dir / src.name), Reader(calib[graph]), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)


def run(args: argparse.Namespace) -> dict:
    import torch

    from s3rt.configs import InferenceConfig
    from s3rt.export.model import build_model
    from s3rt.export.onnx_export import export_model
    from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
    from s3rt.runtime.backends.pytorch.backend import TorchBackend
    from s3rt.runtime.tracker import Tracker
    from s3rt.training.evaluate import HELD_OUT_SEED, held_out_clips, jf_score, mean_mask_iou, track
    from s3rt.training.trained import trained_weights

    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    weights = args.weights or str(trained_weights("tiny"))
    clips = held_out_clips(args.clips, num_frames=args.frames, height=args.height, width=args.width)
    calib_clips = held_out_clips(args.calib_clips, num_frames=args.frames, height=args.height, width=args.width,
                                 seed=HELD_OUT_SEED + 1_000_000)
    gts = [c.masks for c in clips]
    model = build_model("tiny", weights=weights)
    settings = InferenceConfig(mem_every=args.mem_every, stagger_updates=min(5, args.mem_every))
    rows: dict[str, dict] = {}

    def torch_row(name: str, device: str, precision: str) -> list[np.ndarray]:
        backend = TorchBackend("tiny", model=model, device=device, precision=precision)
        with backend:
            preds = [track(lambda: Tracker(backend, settings, max_short_side=None), c)[0] for c in clips]
        rows[name] = {**jf_score(gts, preds), "preds": preds}
        return preds

    say("torch fp32 / bf16")
    ref = torch_row("torch fp32", "cpu", "fp32")
    torch_row("torch bf16 (CPU autocast)", "cpu", "bf16")
    if torch.cuda.is_available():
        torch_row("torch fp16 (CUDA autocast)", "cuda", "fp16")
    else:
        rows["torch fp16 (CUDA autocast)"] = {"skipped": "not run, no GPU lent"}

    with tempfile.TemporaryDirectory() as tmp:
        fp32_dir, int8_dir = Path(tmp) / "fp32", Path(tmp) / "int8"
        say("exporting ONNX fp32 graphs")
        manifest, _ = export_model("tiny", out_dir=fp32_dir, height=args.height, width=args.width, weights=weights,
                                   mem_every=args.mem_every, check_parity=False)
        say("recording calibration inputs")
        calib: dict[str, list] = {}
        with _recording_backend(fp32_dir, calib, args.calib_samples) as rec:
            for c in calib_clips:
                track(lambda: Tracker(rec, manifest.settings, max_short_side=None), c)
        say(f"quantising {', '.join(args.int8_graphs)} (static QDQ INT8)")
        quantize_int8(fp32_dir, int8_dir, calib, tuple(args.int8_graphs))
        backends = {"onnxruntime fp32": OnnxRuntimeBackend(fp32_dir, threads=args.threads),
                    "onnxruntime INT8 (static QDQ)": OnnxRuntimeBackend(int8_dir, threads=args.threads)}
        preds: dict[str, list] = {k: [] for k in backends}
        times: dict[str, list[float]] = {k: [] for k in backends}
        for b in backends.values():
            b.open()
        try:
            for rep in range(args.repeats):
                for c in clips:                       # alternate: both see the same machine load
                    for name, b in backends.items():
                        t0 = time.perf_counter()
                        labels, _ = track(lambda: Tracker(b, manifest.settings, max_short_side=None), c)
                        times[name].append((time.perf_counter() - t0) / len(c.frames))
                        if rep == 0:
                            preds[name].append(labels)
        finally:
            for b in backends.values():
                b.close()
        for name in backends:
            rows[name] = {**jf_score(gts, preds[name]), "preds": preds[name],
                          "ms_per_frame": 1000 * float(np.median(times[name]))}
    ratio = rows["onnxruntime fp32"]["ms_per_frame"] / rows["onnxruntime INT8 (static QDQ)"]["ms_per_frame"]
    base = rows["torch fp32"]["J&F"]
    table = []
    for name, r in rows.items():
        if "skipped" in r:
            table.append({"variant": name, "status": r["skipped"]})
            continue
        drop = 100 * (base - r["J&F"])
        gated = "bf16" in name or "fp16" in name
        table.append({"variant": name, "J&F": r["J&F"], "J": r["J"], "F": r["F"], "drop_pp": drop,
                      "iou_vs_fp32": mean_mask_iou(ref, r["preds"]), "ms_per_frame": r.get("ms_per_frame"),
                      "gate": ("pass" if drop <= GATE_PP else "FAIL") if gated else "-"})
    load = None
    try:
        import os
        load = os.getloadavg()[0]
    except OSError:
        pass
    return {"weights": weights, "clips": {"count": len(clips), "frames": args.frames, "size": [args.height, args.width],
                                          "seeds_from": HELD_OUT_SEED, "calibration_clips": len(calib_clips)},
            "int8_graphs": list(args.int8_graphs), "int8_speed_vs_fp32_ort": ratio, "rows": table,
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "load_avg_1min": load, "torch": torch.__version__}}


def markdown(res: dict) -> str:
    lines = ["| variant | J&F | J | F | drop vs fp32 (pp) | mask IoU vs fp32 | ms/frame | gate (<= 0.5 pp) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if "status" in r:
            lines.append(f"| {r['variant']} | {r['status']} | | | | | | |")
            continue
        ms = f"{r['ms_per_frame']:.1f}" if r["ms_per_frame"] else "-"
        lines.append(f"| {r['variant']} | {r['J&F']:.4f} | {r['J']:.4f} | {r['F']:.4f} | {r['drop_pp']:+.2f} | "
                     f"{r['iou_vs_fp32']:.4f} | {ms} | {r['gate']} |")
    lines.append("")
    lines.append(f"INT8 ({', '.join(res['int8_graphs'])} quantised) vs fp32 ONNX Runtime speed, measured side by "
                 f"side (alternating clips): **{res['int8_speed_vs_fp32_ort']:.2f}x** "
                 f"(> 1 = INT8 faster); 1-min load average {res['machine']['load_avg_1min']:.1f}.")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m s3rt.benchmarks.accuracy_gates", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="tiny checkpoint (default: the shipped trained weights)")
    p.add_argument("--clips", type=int, default=8, help="held-out clips (default 8)")
    p.add_argument("--frames", type=int, default=30, help="frames per clip (default 30)")
    p.add_argument("--height", type=int, default=96, help="frame height (default 96)")
    p.add_argument("--width", type=int, default=160, help="frame width (default 160)")
    p.add_argument("--mem-every", type=int, default=1, help="tracker memory period (default 1, as trained)")
    p.add_argument("--calib-clips", type=int, default=4, help="clips for INT8 calibration (other seeds)")
    p.add_argument("--calib-samples", type=int, default=100, help="recorded inputs per graph for calibration")
    p.add_argument("--int8-graphs", nargs="+", default=list(INT8_GRAPHS_ALL), choices=INT8_GRAPHS_ALL,
                   help="graphs to quantise (default all six)")
    p.add_argument("--repeats", type=int, default=2, help="timing passes over the clips (default 2)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default ORT's)")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--markdown", type=Path, help="write the table here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    res = run(args)
    md = markdown(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
