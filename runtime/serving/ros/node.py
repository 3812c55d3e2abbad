"""The s3rt ROS 2 node: a thin rclpy layer over ``SegmentationNodeLogic`` (one node per camera).

Run it with a sourced ROS 2 and the s3rt_interfaces package (ros/s3rt_interfaces) built:

    s3rt-ros-node --ros-args -r __ns:=/front -r image:=/front_camera/image_raw -p model_dir:=exported/

Topics (relative, so a namespace per camera): subscribes ``image`` (sensor_msgs/Image) and
``image/compressed`` (CompressedImage) with sensor-data QoS, depth ``qos_depth`` (1: latest
wins); publishes ``mask`` (label image, input header), ``detections`` (vision_msgs/
Detection2DArray), ``timing`` (std_msgs/String JSON). Services: ``add_objects`` and
``remove_object`` (s3rt_interfaces), ``reset`` (std_srvs/Trigger). Parameters: the fields of
``NodeParams``. rclpy and the message packages are imported only when a node is created.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from s3rt.runtime.serving.ros.node_logic import NodeParams, SegmentationNodeLogic
from s3rt.runtime.serving.ros.outcome import Session

SessionFactory = Callable[[NodeParams], Session]


def default_session(params: NodeParams) -> Session:
    """The model of `params` on its backend, behind a real-time core stream (as a gRPC stream)."""
    import logging

    from s3rt.inference_settings import resolve_inference_settings
    from s3rt.runtime.backends import make_backend
    from s3rt.runtime.manifest import load_manifest
    from s3rt.runtime.serving.ros.core_session import CoreSession
    from s3rt.runtime.tracker import Tracker

    config = load_manifest(params.model_dir).model.name if params.backend == "torch" else None
    backend = make_backend(params.backend, config=config, model_dir=params.model_dir, device=params.device,
                           threads=params.threads or None)
    overrides = {"max_objects": params.max_objects} if params.backend == "torch" else {}
    effective = resolve_inference_settings(backend.model_config, carried=backend.carried_defaults(),
                                           capacity=backend.capacity, overrides=overrides)   # the model's defaults
    logging.getLogger(__name__).info("inference settings: %s", effective.describe())
    settings = effective.loop
    return CoreSession.open(Tracker(backend, settings), realtime=True, deadline_ms=params.deadline_ms or None,
                            max_objects=params.max_objects, owns_backend=True)


def create_node(*, node_name: str = "s3rt", session_factory: SessionFactory = default_session,
                parameter_overrides: dict[str, Any] | None = None, **node_kwargs: Any) -> Any:
    """An rclpy Node (rclpy.init() must have been called)."""
    return _node_class()(node_name, session_factory, parameter_overrides or {}, **node_kwargs)


def _node_class() -> type:
    """The Node subclass, defined here so that importing this module never imports rclpy."""
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import String
    from std_srvs.srv import Trigger
    from vision_msgs.msg import Detection2DArray

    from s3rt.runtime.serving.ros.messages import RclpyKit

    class S3rtSegmentationNode(Node):
        def __init__(self, name: str, session_factory: SessionFactory, overrides: dict[str, Any],
                     **kwargs: Any) -> None:
            super().__init__(name, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
                             **kwargs)
            defaults = NodeParams()
            for f in fields(NodeParams):
                self.declare_parameter(f.name, getattr(defaults, f.name))
            params = NodeParams(**{f.name: self.get_parameter(f.name).value for f in fields(NodeParams)}).check()
            self.logic = SegmentationNodeLogic(session_factory(params), RclpyKit(), params)
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=params.qos_depth,
                             reliability=(ReliabilityPolicy.BEST_EFFORT if params.qos_reliability == "best_effort"
                                          else ReliabilityPolicy.RELIABLE),
                             durability=qos_profile_sensor_data.durability)
            self.create_subscription(Image, "image", lambda m: self._send(self.logic.on_image(m)), qos)
            self.create_subscription(CompressedImage, "image/compressed",
                                     lambda m: self._send(self.logic.on_image(m, compressed=True)), qos)
            self.pubs = {"mask": self.create_publisher(Image, "mask", 10),
                         "detections": self.create_publisher(Detection2DArray, "detections", 10),
                         "timing": self.create_publisher(String, "timing", 10)}
            self.create_service(Trigger, "reset", self._reset)
            try:
                from s3rt_interfaces.srv import AddObjects, RemoveObject
            except ImportError:
                self.get_logger().warning("s3rt_interfaces is not built in this workspace: no add_objects / "
                                          "remove_object services (colcon build ros/s3rt_interfaces)")
            else:
                self.create_service(AddObjects, "add_objects", self._add_objects)
                self.create_service(RemoveObject, "remove_object", self._remove_object)
            self.create_timer(0.002, lambda: self._send(self.logic.drain()))   # results of the worker
            self.get_logger().info(f"s3rt node ready: {params}")

        def _send(self, out: list[tuple[str, Any]]) -> None:
            for key, msg in out:
                self.pubs[key].publish(msg)

        def _reset(self, request: Any, response: Any) -> Any:
            r = self.logic.reset()
            response.success, response.message = r.success, r.message
            return response

        def _add_objects(self, request: Any, response: Any) -> Any:
            r = self.logic.add_objects(list(request.ids), masks=list(request.masks), boxes=list(request.boxes))
            response.success, response.message, response.ids, response.labels = r.success, r.message, r.ids, r.labels
            return response

        def _remove_object(self, request: Any, response: Any) -> Any:
            r = self.logic.remove_object(request.id)
            response.success, response.message = r.success, r.message
            return response

    return S3rtSegmentationNode


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``s3rt-ros-node`` (ROS arguments after --ros-args)."""
    from s3rt.errors import S3rtError
    from s3rt.optional import optional

    rclpy = optional("rclpy", hint="source a ROS 2 installation (setup.bash) before starting the node")
    try:
        rclpy.load()
    except S3rtError as exc:
        print(f"s3rt-ros-node: error: {exc}", file=sys.stderr)
        return 1
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = None
    try:
        node = create_node()
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    except S3rtError as exc:
        print(f"s3rt-ros-node: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if node is not None:
            node.logic.session.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
