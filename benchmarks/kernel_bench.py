"""GPU microbenchmark: fused ``s3rt::masked_query_gather`` kernel vs the unfused torch reference.

    python3 -m s3rt.benchmarks.kernel_bench [--queries 16] [--heads 8] [--iters 100] [--repeats 5]

Sizes: P = 1620 (480p: 480x864 padded, stride 16 -> 30x54) and P = 8160 (1080p: 1088x1920 padded
-> 68x120); N = 1, 4, 8, 16 objects (B = 1, so BN = N); C = 256; fp32 and fp16 inputs. Both sides
run on the same inputs in one process; each row reports the median over --repeats of the mean time
of --iters back-to-back calls, measured with CUDA events, plus how many argmax indices agree (the
argmax is discontinuous: near-ties may flip, spec 15). Prints a markdown table headed by the device.
Without a CUDA device it prints why and exits with status 2; nothing is measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys

PIXELS = {"480p": 1620, "1080p": 8160}
OBJECTS = (1, 4, 8, 16)
CHANNELS = 256


def _time_ms(fn, *, iters: int, repeats: int, warmup: int) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    means = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        means.append(start.elapsed_time(end) / iters)
    return statistics.median(means)


def run(*, queries: int, heads: int, iters: int, repeats: int, warmup: int, seed: int) -> list[dict]:
    """Measure every (size, objects, dtype) combination; returns one dict per table row."""
    import torch

    from s3rt.kernels.masked_query_attention import reference, torch_op

    ext = torch_op.load_cuda_extension()  # raises MissingDependencyError with the reason
    device = torch.device("cuda")
    generator = torch.Generator(device=device).manual_seed(seed)
    rows = []
    for size, p in PIXELS.items():
        for n in OBJECTS:
            for dtype in (torch.float32, torch.float16):
                pixel = torch.randn(n, p, CHANNELS, device=device, generator=generator).to(dtype)
                query_key = torch.nn.functional.normalize(
                    torch.randn(n, queries, CHANNELS, device=device, generator=generator), dim=-1).to(dtype)
                foreground = torch.rand(n, p, device=device, generator=generator) < 0.3

                def fused():
                    return ext.masked_query_gather(pixel, query_key, foreground, heads)

                def unfused():
                    return reference.masked_query_gather_torch(pixel, query_key, foreground, heads)

                g_fused, i_fused = fused()
                g_ref, i_ref = unfused()
                same = i_fused == i_ref
                same_q = same.all(dim=1)                                    # (BN, Q): all heads agree
                max_diff = ((g_fused.float() - g_ref.float()).abs().amax(dim=-1)[same_q].max().item()
                            if bool(same_q.any()) else float("nan"))
                fused_ms = _time_ms(fused, iters=iters, repeats=repeats, warmup=warmup)
                unfused_ms = _time_ms(unfused, iters=iters, repeats=repeats, warmup=warmup)
                rows.append({
                    "size": size, "P": p, "N": n, "dtype": "fp32" if dtype == torch.float32 else "fp16",
                    "fused_ms": fused_ms, "unfused_ms": unfused_ms, "speedup": unfused_ms / fused_ms,
                    "index_agree": float(same.float().mean().item()), "max_abs_diff": max_diff,
                })
    return rows


def format_table(rows: list[dict], *, queries: int, heads: int) -> str:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    lines = [
        "### masked_query_gather: fused kernel vs unfused torch reference",
        f"device: {props.name} (sm_{props.major}{props.minor}, {props.multi_processor_count} SMs); "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}; Q = {queries}, heads = {heads}, C = {CHANNELS}",
        "",
        "| size | P | N | dtype | fused ms | unfused ms | speedup | index agree | max abs diff |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['size']} | {r['P']} | {r['N']} | {r['dtype']} | {r['fused_ms']:.4f} | "
                     f"{r['unfused_ms']:.4f} | {r['speedup']:.2f}x | {100 * r['index_agree']:.2f}% | "
                     f"{r['max_abs_diff']:.2e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kernel_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=16, help="Q queries per object (default 16)")
    parser.add_argument("--heads", type=int, default=8, help="attention heads (default 8)")
    parser.add_argument("--iters", type=int, default=100, help="calls per timed batch (default 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches; the median is reported")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError as exc:
        print(f"kernel_bench: needs torch with CUDA ({exc}); nothing measured", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(f"kernel_bench: no CUDA device visible (torch {torch.__version__}, built with CUDA "
              f"{torch.version.cuda}); this benchmark needs a GPU - nothing measured", file=sys.stderr)
        return 2

    from s3rt.errors import S3rtError

    try:
        rows = run(queries=args.queries, heads=args.heads, iters=args.iters, repeats=args.repeats,
                   warmup=args.warmup, seed=args.seed)
    except S3rtError as exc:
        print(f"kernel_bench: {exc}", file=sys.stderr)
        return 1
    print(format_table(rows, queries=args.queries, heads=args.heads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
