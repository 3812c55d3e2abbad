"""Serve a model over gRPC: one bidirectional stream per camera, Prometheus metrics, health.

Each stream gets its own tracker (state allocated at open, freed at close); frames follow the
real-time policy: latest frame wins, frames older than --deadline-ms at dequeue are dropped and
reported, never processed late. Binds 127.0.0.1 unless --host says otherwise; use --token and/or
TLS for anything reachable from other machines.

examples:
  s3rt serve --model exported/ --port 50051 --metrics-port 9100
  s3rt serve --model exported/ --host 0.0.0.0 --token-file token.txt --tls-cert srv.pem --tls-key srv.key
  s3rt serve --backend torch --config tiny --port 50051
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from pathlib import Path

from s3rt.cli.common import add_backend_args, add_model_args, add_plugin_lib, add_verbose, backend_from_args
from s3rt.errors import ConfigError

log = logging.getLogger("s3rt.runtime.serving.grpc")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over gRPC (streams, metrics, health)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_backend_args(p, default="onnxruntime")
    add_plugin_lib(p)
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    g.add_argument("--port", type=int, default=50051, help="gRPC port (default 50051; 0 = any free port)")
    g.add_argument("--max-streams", type=int, default=4, help="streams open at once (default 4); more are refused "
                   "with RESOURCE_EXHAUSTED")
    g.add_argument("--max-objects", type=int, default=8, help="objects per stream (default 8; at most what the "
                   "graphs were exported with)")
    g.add_argument("--deadline-ms", type=float, default=200.0, help="default per-stream deadline: a frame older "
                   "than this when dequeued is dropped (default 200; a stream may ask for another; 0 = none)")
    g.add_argument("--idle-timeout", type=float, default=60.0, help="close a stream after this many seconds "
                   "without a frame or control, freeing its state (default 60; 0 = never)")
    g.add_argument("--max-frame-mb", type=float, default=32.0, help="largest frame accepted, in MiB (default 32); "
                   "gRPC's message limit is set to fit a frame and its mask")
    g.add_argument("--max-image-mpx", type=float, default=0.0, help="largest decoded frame or mask, in megapixels, "
                   "checked from the image header before decoding (default 0: 16x the export size, at least "
                   "3840x2160)")
    g.add_argument("--first-message-timeout", type=float, default=5.0, help="a stream that sends no first message "
                   "within this many seconds is cancelled, so silent clients cannot hold the server (default 5)")
    g.add_argument("--size", type=int, default=480, help="torch backend: shrink frames so the shorter side is at "
                   "most this (default 480; 0 = native). Exported graphs have a fixed size")
    s = p.add_argument_group("security")
    s.add_argument("--token", help="shared secret clients must send as 'authorization: Bearer <token>' (or "
                   "'x-s3rt-token') metadata")
    s.add_argument("--token-file", metavar="FILE", help="read the shared secret from FILE (first line)")
    s.add_argument("--tls-cert", metavar="PEM", help="server certificate chain: serve TLS instead of plaintext")
    s.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    s.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA")
    o = p.add_argument_group("observability")
    o.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (/metrics)")
    o.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics endpoint (default 127.0.0.1)")
    o.add_argument("--log-json", action="store_true", help="one JSON object per log line (stream open/close/errors)")
    add_verbose(p)
    p.set_defaults(func=run)


class JsonFormatter(logging.Formatter):
    """Log records as JSON, with the structured fields passed through `extra=`."""

    _STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        data = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                "msg": record.getMessage()}
        data.update({k: v for k, v in vars(record).items() if k not in self._STD})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def run(args: argparse.Namespace) -> int:
    from s3rt.runtime.serving import ServingLimits, StreamOptions
    from s3rt.runtime.serving.grpc.server import ServerConfig, build_server, return_freed_memory_promptly

    if args.log_json:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.getLogger().handlers = [handler]
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    token = read_token(args.token, args.token_file)
    return_freed_memory_promptly()
    if args.tls_cert is not None:
        check_tls_pair(args.tls_cert, args.tls_key)
    if args.host not in ("127.0.0.1", "localhost", "::1") and token is None and args.tls_cert is None:
        log.warning("binding %s without --token or TLS: anyone who can reach the port can use the model", args.host)
    backend, _ = backend_from_args(args)
    read = lambda path: Path(path).read_bytes() if path else None  # noqa: E731
    cfg = ServerConfig(host=args.host, port=args.port, max_frame_bytes=int(args.max_frame_mb * (1 << 20)), token=token,
                       tls_cert=read(args.tls_cert), tls_key=read(args.tls_key), tls_client_ca=read(args.tls_client_ca),
                       max_image_pixels=int(args.max_image_mpx * 1e6) or None,
                       first_message_timeout_s=args.first_message_timeout)
    limits = ServingLimits(max_streams=args.max_streams, max_objects=args.max_objects,
                           idle_timeout_s=args.idle_timeout or None)
    defaults = StreamOptions(deadline_ms=args.deadline_ms or None)
    server = build_server(backend, limits=limits, defaults=defaults, config=cfg,
                          max_short_side=(args.size or None) if args.backend == "torch" else None)
    server.start()
    if args.metrics_port is not None:
        server.metrics.serve_http(args.metrics_port, args.metrics_host)
        log.info("metrics on http://%s:%d/metrics", args.metrics_host, args.metrics_port)
    print(f"s3rt serve: {server.info['model']} on {args.backend}, listening on {args.host}:{server.port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


def read_token(token: str | None, token_file: str | None) -> str | None:
    """The shared secret from --token or the first line of --token-file; an empty one is refused
    (it used to start an open server without a word)."""
    if token is not None and token_file is not None:
        raise ConfigError("give --token or --token-file, not both")
    if token_file is not None:
        try:
            lines = Path(token_file).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read --token-file {token_file}: {exc.strerror if isinstance(exc, OSError) else 'not text'}") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise ConfigError(f"--token-file {token_file}: the first line is empty; put the secret on it")
    elif token is not None and not token.strip():
        raise ConfigError("--token is empty; give a secret (or no --token for a server without one)")
    return token


def check_tls_pair(cert: str, key: str) -> None:
    """Refuse a certificate and key that do not belong together before gRPC's bare 'Failed to bind'."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS file not found: {exc.filename}") from None
    except ssl.SSLError as exc:
        why = "the key does not match the certificate" if "MISMATCH" in str(exc).upper() else exc.reason or str(exc)
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: {why}") from None
