#!/usr/bin/env python3
"""Per-frame latency of the ROS 2 node beside the gRPC server, one run, same export, same clip, same rate.

    python ros/bench_node_latency.py --config tiny --height 240 --width 427 --frames 150 --rate 10 --threads 2

gRPC: `s3rt serve` on 127.0.0.1, a latest-frame-wins stream paced at --rate (the stream
benchmark's client; e2e = result arrival - send stamp). ROS: `s3rt-ros-node` (ROS 2 Kilted
wheels, localhost DDS), an rclpy client publishing sensor_msgs/Image at --rate; latency = mask
received - Image published, one clock. Both: processed frames only, drops counted. Needs the
`ros-live` extra and the interfaces built (python ros/build_interfaces.py). Prints a markdown
table and writes --json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _percentiles(values: list[float]) -> dict:
    a = np.asarray(values, float)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99))} if len(a) else {}


def ros_latency(model_dir: str, frames: list[np.ndarray], mask: np.ndarray, *, rate: float, threads: int,
                deadline_ms: float, env: dict[str, str], log: Path) -> dict:
    """Publish the clip to a real node at `rate`; latency of every mask received."""
    import rclpy

    from ros.live_kit import Client, NodeProcess, image_msg, mono8_mask

    node = NodeProcess(env, log, Path(model_dir), "-r", "__ns:=/bench",
                       params={"threads": threads, "deadline_ms": deadline_ms})
    try:
        node.wait_ready()
        client = Client("/bench", reliable=False)
        client.connected()
        from s3rt_interfaces.srv import AddObjects

        req = AddObjects.Request(ids=["obj"], masks=[mono8_mask(mask == 1)])
        assert client.call(client.add, req).success
        sent: dict[int, int] = {}
        t0 = time.perf_counter()
        for i, frame in enumerate(frames):
            while (wait := t0 + i / rate - time.perf_counter()) > 0:
                client.spin(min(wait, 0.005))
            stamp = 1_700_000_000_000_000_000 + i
            sent[stamp] = time.perf_counter_ns()
            client.image_pub.publish(image_msg(frame, stamp))
        client.wait(lambda: len(client.timing()) >= len(frames), "a timing record per frame", 60)
        timing = client.timing()
        latencies = [(client.arrival_ns[s] - sent[s]) / 1e6 for s in sent if s in client.arrival_ns and
                     s != min(sent)]                      # frame 0 carries the masks (waited for)
        dropped: dict[str, int] = {}
        for t in timing:
            if t["status"] == "dropped":
                dropped[t["reason"]] = dropped.get(t["reason"], 0) + 1
        client.close()
        return {"results": len(latencies), "dropped": dropped, "e2e_ms": _percentiles(latencies),
                "timing_records": len(timing)}
    finally:
        node.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=427)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--deadline-ms", type=float, default=200.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from ros.build_interfaces import DEFAULT_OUT, build, env_for, ros_prefix
    from ros.live_kit import use_built_interfaces
    from s3rt.benchmarks.bench import machine_info
    from s3rt.benchmarks.stream_bench import StreamBenchOptions, _clip, _served, _start_server

    install = build(DEFAULT_OUT, jobs=os.cpu_count() or 1, quiet=True)
    local = {"ROS_DOMAIN_ID": str(random.randint(1, 100)), "ROS_LOCALHOST_ONLY": "1",
             "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env = {**os.environ, **env_for(install, ros_prefix()), **local}
    use_built_interfaces(install, env)
    os.environ.update(local)
    import rclpy

    with tempfile.TemporaryDirectory(prefix="s3rt-ros-bench-") as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from s3rt.export.onnx_export import export_model
            export_model(args.config, out_dir=tmp, height=args.height, width=args.width, check_parity=False)
            model_dir = tmp
        o = StreamBenchOptions(model_dir=model_dir, frames=args.frames, threads=args.threads, rates=[args.rate],
                               deadline_ms=args.deadline_ms)
        frames, mask = _clip(model_dir, o)
        load = os.getloadavg()[0]
        proc, port = _start_server(model_dir, o)
        try:
            grpc = _served(f"127.0.0.1:{port}", frames, mask, o, every_frame=False, fps=args.rate)
        finally:
            proc.terminate()
            proc.wait(30)
        rclpy.init()
        try:
            ros = ros_latency(model_dir, frames, mask, rate=args.rate, threads=args.threads,
                              deadline_ms=args.deadline_ms, env=env, log=Path(tmp) / "node.log")
        finally:
            rclpy.try_shutdown()
    result = {"machine": machine_info(), "load_1min_before": load, "options": vars(args) | {"json": None},
              "grpc": grpc, "ros": ros}
    h, w = frames[0].shape[:2]
    print(f"#### node latency: {args.config} {h}x{w}, ONNX Runtime CPU, threads={args.threads}, "
          f"{len(frames)} frames at {args.rate:g} FPS, deadline {args.deadline_ms:g} ms, latest frame wins")
    print(f"machine: {result['machine'].get('cpu')}, load {load:.2f} before the run\n")
    print("| path | processed | dropped (reason) | e2e p50 | e2e p95 | e2e p99 |\n|---|---|---|---|---|---|")
    for name, r in (("gRPC (`s3rt serve`, loopback)", grpc), ("ROS 2 node (Image -> mask, localhost DDS)", ros)):
        e = r["e2e_ms"]
        drops = r["dropped_total"] if "dropped_total" in r else sum(r["dropped"].values())
        print(f"| {name} | {r['results']} | {drops} ({', '.join(f'{k} {v}' for k, v in r['dropped'].items()) or '-'}) "
              f"| {e.get('p50', float('nan')):.0f} | {e.get('p95', float('nan')):.0f} | {e.get('p99', float('nan')):.0f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
