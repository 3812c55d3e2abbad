"""Example: one s3rt segmentation node per camera (ros2 launch ros/launch/s3rt_cameras.launch.py).

Needs a sourced ROS 2 (rclpy, sensor_msgs, vision_msgs, std_srvs), the s3rt_interfaces package
built in the workspace (ros/s3rt_interfaces), and s3rt installed with the 'ros' and
'onnxruntime' extras in the same Python. Each node lives in its camera's namespace, so its
topics are /<camera>/image (remapped to the driver's topic), /<camera>/mask, /<camera>/detections,
/<camera>/timing and its services /<camera>/add_objects, /<camera>/remove_object, /<camera>/reset.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration

CAMERAS = {"front": "/front_camera/image_raw", "rear": "/rear_camera/image_raw"}


def generate_launch_description() -> LaunchDescription:
    model = LaunchConfiguration("model_dir")
    actions = [DeclareLaunchArgument("model_dir", description="folder written by 's3rt export'"),
               DeclareLaunchArgument("backend", default_value="onnxruntime")]
    for name, topic in CAMERAS.items():
        actions.append(ExecuteProcess(
            name=f"s3rt_{name}", output="screen",
            cmd=["s3rt-ros-node", "--ros-args", "-r", f"__ns:=/{name}", "-r", f"__node:=s3rt_{name}",
                 "-r", f"image:={topic}",
                 "-p", ["model_dir:=", model], "-p", ["backend:=", LaunchConfiguration("backend")],
                 "-p", "max_objects:=4", "-p", "deadline_ms:=100.0", "-p", "qos_depth:=1"]))
    return LaunchDescription(actions)
