"""One s3rt segmentation node per camera with a sourced ROS 2: ros2 launch ros/launch/s3rt_cameras.launch.py
model_dir:=exported/. (With only the `ros-live` wheels, which have no `ros2 launch`, run
ros/launch/s3rt_cameras.py instead: the same nodes, the same arguments.)

Needs s3rt installed with the 'ros' and 'onnxruntime' extras in the ROS 2 Python, and the
interfaces built (python ros/build_interfaces.py; then `. .ros-build/env.sh`). Each node lives in
its camera's namespace: /<camera>/image (remapped to the driver's topic; the compressed
subscription follows as <topic>/compressed), /<camera>/mask, /<camera>/detections,
/<camera>/timing and the services /<camera>/add_objects, /<camera>/remove_object, /<camera>/reset.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration

from s3rt.runtime.serving.ros.node import camera_ros_args

CAMERAS = {"front": "/front_camera/image_raw", "rear": "/rear_camera/image_raw"}


def generate_launch_description() -> LaunchDescription:
    actions = [DeclareLaunchArgument("model_dir", description="folder written by 's3rt export'"),
               DeclareLaunchArgument("backend", default_value="onnxruntime")]
    for name, topic in CAMERAS.items():
        args = camera_ros_args(name, topic, max_objects=4, deadline_ms=100.0, qos_depth=1)
        actions.append(ExecuteProcess(
            name=f"s3rt_{name}", output="screen", sigterm_timeout="10",
            cmd=["s3rt-ros-node", *args, "-p", ["model_dir:=", LaunchConfiguration("model_dir")],
                 "-p", ["backend:=", LaunchConfiguration("backend")]]))
    return LaunchDescription(actions)
