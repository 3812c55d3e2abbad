"""A live ROS 2 kit for tests and benchmarks: a real `s3rt-ros-node` process and a real rclpy
client (publishes frames, calls the services, collects mask / detections / timing), plus making
the packages built by ros/build_interfaces.py importable in an already running Python.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def use_built_interfaces(install: Path, env: dict[str, str]) -> None:
    """Make the built packages importable here (the loader read LD_LIBRARY_PATH at start-up, so
    their libraries are loaded by path, each after the ones it needs); `env` from env_for()."""
    for key in ("AMENT_PREFIX_PATH", "LD_LIBRARY_PATH"):
        os.environ[key] = env[key]
    site = install / f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    left = sorted((install / "lib").glob("*.so"))
    for _ in range(len(left)):
        failed = []
        for lib in left:
            try:
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(lib)
        if not failed:
            return
        left = failed
    raise RuntimeError(f"cannot load {left}")


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, spin: Callable[[float], None]) -> Any:
    """Spin the client until `check()` is truthy; fails naming `what` after `timeout_s`."""
    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        got = check()
        if got:
            return got
        spin(0.02)
    got = check()
    assert got, f"timed out after {timeout_s:.0f} s waiting for {what}"
    return got


class NodeProcess:
    """A real `s3rt-ros-node` process (stdout+stderr to a log file)."""

    def __init__(self, env: dict[str, str], log: Path, model_dir: Path, *ros_args: str,
                 ignore_sigint: bool = False, params: dict[str, Any] | None = None) -> None:
        exe = Path(sys.executable).with_name("s3rt-ros-node")
        cmd = [str(exe), "--ros-args", "-p", f"model_dir:={model_dir}", *ros_args]
        for k, v in (params or {}).items():
            cmd += ["-p", f"{k}:={v}"]
        self.log = log
        self._out = open(log, "wb")
        preexec = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._out, stderr=subprocess.STDOUT, preexec_fn=preexec)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        until = time.monotonic() + timeout_s
        while time.monotonic() < until:
            if "s3rt node ready" in self.text():
                return
            assert self.proc.poll() is None, f"node exited with {self.proc.returncode}:\n{self.text()[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"node not ready after {timeout_s} s:\n{self.text()[-3000:]}")

    def cpu_seconds(self) -> float:
        """utime + stime of the process from /proc (clock ticks -> s)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        return self.proc.returncode


class Client:
    """A real rclpy client of one node: publishes frames, calls services, collects outputs."""

    def __init__(self, ns: str, *, image_topic: str | None = None, reliable: bool = True) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from s3rt_interfaces.srv import AddObjects, RemoveObject
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String
        from std_srvs.srv import Trigger
        from vision_msgs.msg import Detection2DArray

        self.rclpy = rclpy
        self.node = rclpy.create_node(f"s3rt_test_client_{os.getpid()}_{ns.strip('/').replace('/', '_')}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        image_topic = image_topic or f"{ns}/image"
        pub_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE if reliable
                             else ReliabilityPolicy.BEST_EFFORT)
        self.image_pub = self.node.create_publisher(Image, image_topic, pub_qos)
        self.compressed_pub = self.node.create_publisher(CompressedImage, f"{image_topic}/compressed", pub_qos)
        self.got: dict[str, list[Any]] = {"mask": [], "detections": [], "timing": []}
        for key, cls in (("mask", Image), ("detections", Detection2DArray), ("timing", String)):
            self.node.create_subscription(cls, f"{ns}/{key}", lambda m, k=key: self._on(k, m), 1000)
        self.add = self.node.create_client(AddObjects, f"{ns}/add_objects")
        self.remove = self.node.create_client(RemoveObject, f"{ns}/remove_object")
        self.reset = self.node.create_client(Trigger, f"{ns}/reset")
        self.arrival_ns: dict[int, int] = {}       # mask stamp -> monotonic arrival (ns)

    def _on(self, key: str, msg: Any) -> None:
        self.got[key].append(msg)
        if key == "mask":
            self.arrival_ns[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = time.perf_counter_ns()

    def spin(self, timeout_s: float) -> None:
        self.executor.spin_once(timeout_sec=timeout_s)

    def wait(self, check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
        return wait_for(check, timeout_s, what, self.spin)

    def connected(self, timeout_s: float = 30.0) -> None:
        """Services answer and the node's image subscriptions match our publishers."""
        for cli in (self.add, self.remove, self.reset):
            assert cli.wait_for_service(timeout_sec=timeout_s), f"service {cli.srv_name} not available"
        self.wait(lambda: self.image_pub.get_subscription_count() > 0
                  and self.compressed_pub.get_subscription_count() > 0, "the node's image subscriptions")
        self.wait(lambda: all(self.node.count_publishers(t) for t in self.output_topics()), "the node's publishers")

    def output_topics(self) -> list[str]:
        return [s.topic_name for s in self.node.subscriptions]

    def call(self, client: Any, request: Any, timeout_s: float = 30.0) -> Any:
        future = client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=timeout_s)
        assert future.done(), f"no reply from {client.srv_name} within {timeout_s} s"
        return future.result()

    def timing(self) -> list[dict]:
        import json

        return [json.loads(m.data) for m in self.got["timing"]]

    def clear(self) -> None:
        for v in self.got.values():
            v.clear()

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.executor.shutdown()


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "cam") -> Any:
    from s3rt.runtime.serving.ros import convert, messages

    kit = messages.RclpyKit()
    return messages.image(kit, messages.header(kit, stamp_ns, frame_id), convert.encode_image(rgb, "rgb8"))


def compressed_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "cam") -> Any:
    from s3rt.runtime.serving.ros import convert, messages

    kit = messages.RclpyKit()
    return messages.compressed_image(kit, messages.header(kit, stamp_ns, frame_id), "png",
                                     convert.encode_compressed(rgb, "png"))


def mono8_mask(plane: np.ndarray) -> Any:
    """An add_objects mask: mono8, 255 where `plane` is set."""
    from s3rt.runtime.serving.ros import convert, messages

    kit = messages.RclpyKit()
    return messages.image(kit, messages.header(kit, 0, ""),
                          convert.encode_image(np.where(plane, 255, 0).astype(np.uint8), "mono8"))


def stamp_of(msg: Any) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
