#!/usr/bin/env python3
"""One s3rt segmentation node per camera, without a ROS 2 installation (the `ros-live` wheels
have no `ros2 launch`; with a sourced ROS 2 use s3rt_cameras.launch.py beside this file).

    python ros/build_interfaces.py              # once: s3rt_interfaces + vision_msgs
    python ros/launch/s3rt_cameras.py --model-dir exported/ \\
        --camera front=/front_camera/image_raw --camera rear=/rear_camera/image_raw -p deadline_ms:=100.0

Each node lives in /<camera> (topics /<camera>/mask, detections, timing; services
/<camera>/add_objects, remove_object, reset), its `image` remapped to the camera's topic.
SIGINT/SIGTERM are passed to every node; the exit status is 0 when every node ended cleanly.
A node that dies ends the others (exit status 1), as launch does with a required process.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CAMERAS = ["front=/front_camera/image_raw", "rear=/rear_camera/image_raw"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="folder written by 's3rt export'")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--camera", action="append", metavar="NAME=IMAGE_TOPIC",
                        help=f"a camera and its image topic (repeat; default {' '.join(DEFAULT_CAMERAS)})")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="a node parameter for every node (repeat), e.g. deadline_ms:=100.0")
    parser.add_argument("--build", type=Path, default=REPO / ".ros-build", help="ros/build_interfaces.py's folder")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from ros.build_interfaces import env_for, ros_prefix
    from s3rt.runtime.serving.ros.node import camera_ros_args

    env = {**os.environ, **env_for(args.build / "install", ros_prefix())}
    params = {"model_dir": args.model_dir, "backend": args.backend, "max_objects": 4, "qos_depth": 1}
    for item in args.param:
        name, sep, value = item.partition(":=")
        if not sep:
            parser.error(f"--param expects NAME:=VALUE, got '{item}'")
        params[name] = value
    node_exe = str(Path(sys.executable).with_name("s3rt-ros-node"))
    nodes = {}
    for cam in args.camera or DEFAULT_CAMERAS:
        name, sep, topic = cam.partition("=")
        if not sep or not name or not topic:
            parser.error(f"--camera expects NAME=IMAGE_TOPIC, got '{cam}'")
        nodes[name] = subprocess.Popen([node_exe, *camera_ros_args(name, topic, **params)], env=env)

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in nodes.values():
            if proc.poll() is None:
                proc.send_signal(signum)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    status = 0
    while any(p.poll() is None for p in nodes.values()):
        for name, proc in nodes.items():
            if proc.returncode not in (None, 0) and not stopping:
                print(f"s3rt_cameras: node '{name}' exited with {proc.returncode}; stopping the others",
                      file=sys.stderr)
                status = 1
                stop(signal.SIGTERM, None)
        time.sleep(0.2)
    if any(p.returncode != 0 for p in nodes.values()):
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
