"""ROS 2 adapters: message conversion, rosbag2 (sqlite3/MCAP) replay, and a node.

Torch-free, and rclpy is never imported at module import: bag replay needs only `rosbags`
(pure Python), the live node imports rclpy when it starts. Everything here is a thin adapter
over the transport-free session core: convert messages, call the core, convert results back.
The one place they meet the core is `core_session.CoreSession`, over the same
`serving.StreamSession` the gRPC server drives.
"""
