"""The s3rt ROS 2 node: a thin rclpy layer over ``SegmentationNodeLogic`` (one node per camera).

Run it with a sourced ROS 2 and the s3rt_interfaces package (ros/s3rt_interfaces) built:

    s3rt-ros-node --ros-args -r __ns:=/front -r image:=/front_camera/image_raw -p model_dir:=exported/

Topics (relative, so a namespace per camera): subscribes ``image`` (sensor_msgs/Image) and,
as image_transport names it, ``<resolved image topic>/compressed`` (CompressedImage; remapping
``image`` moves both) with sensor-data QoS, depth ``qos_depth`` (1: latest wins); publishes
``mask`` (label image, input header), ``detections`` (vision_msgs/Detection2DArray), ``timing``
(std_msgs/String JSON, one record per frame: ok, dropped, error or no_objects). Services:
``add_objects`` and ``remove_object`` (s3rt_interfaces), ``reset`` (std_srvs/Trigger).
Parameters: the fields of ``NodeParams``, described (``ros2 param describe``); those that cannot
change while running are read-only, the others are applied at once.

Idle costs nothing: results are collected by a timer that runs only while frames are in flight.
SIGINT and SIGTERM (launch, docker stop, systemd) end the node with exit status 0 after closing
the model's stream. rclpy and the message packages are imported only when a node is created.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from s3rt.errors import S3rtError
from s3rt.runtime.serving.ros.node_logic import PARAMETERS, NodeParams, SegmentationNodeLogic
from s3rt.runtime.serving.ros.outcome import Session

SessionFactory = Callable[[NodeParams], Session]


def default_session(params: NodeParams) -> Session:
    """The model of `params` on its backend, behind a real-time core stream (as a gRPC stream)."""
    import logging

    from s3rt.inference_settings import resolve_inference_settings
    from s3rt.runtime.backends.registry import BackendRequest, build_backend
    from s3rt.runtime.serving.ros.core_session import CoreSession
    from s3rt.runtime.tracker import Tracker

    # torch: the config the export was made from (the registry reads it from the manifest)
    backend = build_backend(BackendRequest(params.backend, model_dir=params.model_dir, device=params.device,
                                           threads=params.threads or None))
    overrides = {"max_objects": params.max_objects} if params.backend == "torch" else {}
    effective = resolve_inference_settings(backend.model_config, carried=backend.carried_defaults(),
                                           capacity=backend.capacity, overrides=overrides)   # the model's defaults
    logging.getLogger(__name__).info("inference settings: %s", effective.describe())
    settings = effective.loop
    return CoreSession.open(Tracker(backend, settings), realtime=True, deadline_ms=params.deadline_ms or None,
                            max_objects=params.max_objects, owns_backend=True)


def camera_ros_args(camera: str, image_topic: str, **params: Any) -> list[str]:
    """The ``--ros-args`` of one camera's node: namespace /<camera>, node s3rt_<camera>, its image
    topic remapped to the driver's (the compressed one follows), then ``-p name:=value`` each."""
    args = ["--ros-args", "-r", f"__ns:=/{camera}", "-r", f"__node:=s3rt_{camera}", "-r", f"image:={image_topic}"]
    for name, value in params.items():
        args += ["-p", f"{name}:={value}"]
    return args


def create_node(*, node_name: str = "s3rt", session_factory: SessionFactory = default_session,
                parameter_overrides: dict[str, Any] | None = None, **node_kwargs: Any) -> Any:
    """An rclpy Node (rclpy.init() must have been called)."""
    return _node_class()(node_name, session_factory, parameter_overrides or {}, **node_kwargs)


RESULT_POLL_S = 0.002     # period of the result timer, which runs only while frames are in flight


def _node_class() -> type:
    """The Node subclass, defined here so that importing this module never imports rclpy."""
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
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
            for f in dataclasses.fields(NodeParams):
                text, live = PARAMETERS[f.name]
                text += "" if live else " (read-only: set it when starting the node)"
                self.declare_parameter(f.name, getattr(defaults, f.name),
                                       ParameterDescriptor(description=text, read_only=not live))
            params = NodeParams(**{f.name: self.get_parameter(f.name).value
                                   for f in dataclasses.fields(NodeParams)}).check()
            self.logic = SegmentationNodeLogic(session_factory(params), RclpyKit(), params)
            # image_transport's naming: the compressed stream is "<image topic>/compressed" of the
            # *resolved* image topic, so "-r image:=/cam/image_raw" moves both subscriptions
            image_topic = self.resolve_topic_name("image")
            self.image_topics = {"raw": image_topic, "compressed": f"{image_topic}/compressed"}
            self._subs: list[Any] = []
            self._subscribe(params)
            self.pubs = {"mask": self.create_publisher(Image, "mask", 10),
                         "detections": self.create_publisher(Detection2DArray, "detections", 10),
                         "timing": self.create_publisher(String, "timing", 10)}
            self.create_service(Trigger, "reset", self._reset)
            try:
                from s3rt_interfaces.srv import AddObjects, RemoveObject
            except ImportError:
                self.get_logger().warning("s3rt_interfaces is not built in this workspace: no add_objects / "
                                          "remove_object services (python ros/build_interfaces.py)")
            else:
                self.create_service(AddObjects, "add_objects", self._add_objects)
                self.create_service(RemoveObject, "remove_object", self._remove_object)
            self._results = self.create_timer(RESULT_POLL_S, self._collect)
            self._results.cancel()                  # started by a frame, stopped when none is in flight
            self.add_on_set_parameters_callback(self._on_set_parameters)
            self.get_logger().info(f"s3rt node ready: {params}; images on {image_topic} "
                                   f"and {self.image_topics['compressed']}")

        def _subscribe(self, params: NodeParams) -> None:
            """(Re)create the image subscriptions with the QoS of `params`."""
            for sub in self._subs:
                self.destroy_subscription(sub)
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=params.qos_depth,
                             reliability=(ReliabilityPolicy.BEST_EFFORT if params.qos_reliability == "best_effort"
                                          else ReliabilityPolicy.RELIABLE),
                             durability=qos_profile_sensor_data.durability)
            self._subs = [
                self.create_subscription(Image, self.image_topics["raw"], lambda m: self._on_image(m, False), qos),
                self.create_subscription(CompressedImage, self.image_topics["compressed"],
                                         lambda m: self._on_image(m, True), qos)]

        def _on_set_parameters(self, changes: list[Any]) -> Any:
            """Check the new values together, then apply them (read-only ones never get here)."""
            old = self.logic.params
            try:
                new = dataclasses.replace(old, **{p.name: p.value for p in changes}).check()
            except (TypeError, S3rtError) as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            self.logic.params = new
            if new.deadline_ms != old.deadline_ms:
                self._set_deadline(new.deadline_ms)
            if (new.qos_depth, new.qos_reliability) != (old.qos_depth, old.qos_reliability):
                self._subscribe(new)
            return SetParametersResult(successful=True)

        def _set_deadline(self, deadline_ms: float) -> None:
            """The core stream applies a new deadline to the frames it takes next."""
            self.logic.session.stream.set_deadline(deadline_ms or None)

        def _on_image(self, msg: Any, compressed: bool) -> None:
            self._send(self.logic.on_image(msg, compressed=compressed))
            if self.logic.pending and self._results.is_canceled():
                self._results.reset()

        def _collect(self) -> None:
            self._send(self.logic.drain())
            if not self.logic.pending:
                self._results.cancel()

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

        def close(self) -> None:
            """Close the model's stream and the node (outputs still queued are not published)."""
            self.logic.session.close()
            self.destroy_node()

    return S3rtSegmentationNode


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``s3rt-ros-node`` (ROS arguments after --ros-args).

    Exit 0 on SIGINT/SIGTERM (rclpy's handlers shut the context down; spin then raises
    ExternalShutdownException, which is the normal way out here), 1 on a configuration error.
    """
    from s3rt.optional import optional

    rclpy = optional("rclpy", hint="source a ROS 2 installation (setup.bash) before starting the node, or "
                                   "pip install 's3rt[ros-live]' (CPython 3.11 x86_64)")
    try:
        rclpy.load()
    except S3rtError as exc:
        print(f"s3rt-ros-node: error: {exc}", file=sys.stderr)
        return 1
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=argv if argv is not None else sys.argv)
    node = None
    status = 0
    try:
        node = create_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except S3rtError as exc:
        print(f"s3rt-ros-node: error: {exc}", file=sys.stderr)
        status = 1
    except Exception:
        if rclpy.ok():       # a real failure; during a signal's shutdown rclpy calls fail as the context goes
            raise
    finally:
        if node is not None:
            node.close()
        rclpy.try_shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
