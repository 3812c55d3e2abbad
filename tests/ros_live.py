"""Live ROS 2 tests' set-up: the interfaces built by ros/build_interfaces.py, one DDS domain per
test run on localhost only; the node process and the rclpy client are ros/live_kit.py's.

The ROS 2 Kilted wheels exist for CPython 3.11 on x86_64 Linux only: elsewhere the live tests
skip with that reason; there, a missing `ros-live` extra is an error (CI installs it).
"""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ros.live_kit import (Client, NodeProcess, compressed_msg, image_msg, mono8_mask,  # noqa: E402,F401
                          stamp_of, use_built_interfaces, wait_for)

BUILD_SCRIPT = REPO / "ros" / "build_interfaces.py"
WHEELS_PLATFORM = sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64"
DOMAIN_ID = random.Random(os.getpid() ^ time.time_ns()).randint(1, 100)
LOCAL_ONLY = {"ROS_DOMAIN_ID": str(DOMAIN_ID), "ROS_LOCALHOST_ONLY": "1",
              "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}


def require_live() -> dict[str, str]:
    """Build (or find cached) interfaces; the environment a node process needs. Skips off-platform."""
    if not WHEELS_PLATFORM:
        pytest.skip(f"ROS 2 Kilted wheels exist for CPython 3.11 x86_64 Linux only (this is Python "
                    f"{sys.version_info.major}.{sys.version_info.minor} on {sys.platform} {platform.machine()})")
    try:
        import rclpy  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"rclpy is missing ({exc}): pip install -e '.[ros-live]' (make test installs it)")
    run = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--quiet"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"ros/build_interfaces.py failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
    from ros.build_interfaces import DEFAULT_OUT, env_for, ros_prefix

    env = {**os.environ, **env_for(DEFAULT_OUT / "install", ros_prefix()), **LOCAL_ONLY}
    use_built_interfaces(DEFAULT_OUT / "install", env)
    os.environ.update(LOCAL_ONLY)
    return env


