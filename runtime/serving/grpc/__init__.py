"""gRPC transport over the serving core (s3rt.runtime.serving): server, codecs, metrics.

Needs the `serve` extra (grpcio, grpcio-tools, protobuf, prometheus-client). The client side is
`s3rt.runtime.serving.grpc.client`; the CLI `s3rt serve` / `s3rt stream`.
"""
