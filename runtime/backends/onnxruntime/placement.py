"""Which execution provider ONNX Runtime assigned each node to, read from its verbose session log.

`get_providers()` lists the providers a session *may* use, so a CUDA session whose heavy nodes
silently fell back to CPUExecutionProvider looks like a CUDA session. ONNX Runtime logs the
real placement at VERBOSE level while the session is built (session_state.cc,
VerifyEachNodeIsAssignedToAnEp):

    ... VerifyEachNodeIsAssignedToAnEp] Node placements
    ... VerifyEachNodeIsAssignedToAnEp]  All nodes placed on [CPUExecutionProvider]. Number of nodes: 2
or, with several providers,
    ... VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on [CUDAExecutionProvider]. Number of nodes: 40
    ... VerifyEachNodeIsAssignedToAnEp]   Conv (/enc/conv1/Conv)
    ... VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on [CPUExecutionProvider]. Number of nodes: 3
    ... VerifyEachNodeIsAssignedToAnEp]   Shape (/Shape)

`build_session_with_placement` builds a session with that log captured (the C++ logger writes to
file descriptor 2, so the descriptor is redirected to a temporary file for the build), and
`check_placement` refuses compute nodes on CPU when a GPU provider was asked for. ONNX Runtime
deliberately puts shape arithmetic on CPU even in GPU sessions; those ops (`CPU_OK_OPS`) are
reported, not refused. The exemption is by op type only: a float Mul of these types on CPU is
reported in the note but not refused (ORT's log does not say which tensors are shape tensors).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from s3rt.errors import BackendError

_ALL = re.compile(r"All nodes placed on \[(\w+)\]\. Number of nodes: (\d+)")
_SOME = re.compile(r"Node\(s\) placed on \[(\w+)\]\. Number of nodes: (\d+)")
_NODE = re.compile(r"VerifyEachNodeIsAssignedToAnEp\]\s{2,}(\S+) \((.*)\)\s*$")
_PROBLEM = re.compile(r"\[[WEF]:onnxruntime")          # warning, error, fatal lines (TensorRT EP's too)
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
# shape arithmetic ONNX Runtime keeps on CPU on purpose (small int64 tensors)
CPU_OK_OPS = frozenset({"Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Reshape", "Cast",
                        "ConstantOfShape", "Range", "Equal", "Where", "Expand", "Mul", "Add", "Sub", "Div",
                        "Floor", "Ceil", "ReduceProd", "Identity", "Constant"})


class Placement(dict):
    """provider -> node count, plus `nodes`: provider -> [(op_type, name)] when ORT listed them."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, list[tuple[str, str]]] = {}


def parse_placement(log_text: str) -> Placement:
    """Node placement from ONNX Runtime's verbose session log (empty if the log has none)."""
    out = Placement()
    current = None
    for line in log_text.splitlines():
        if "VerifyEachNodeIsAssignedToAnEp" not in line:
            continue
        m = _ALL.search(line) or _SOME.search(line)
        if m:
            current = m.group(1)
            out[current] = out.get(current, 0) + int(m.group(2))
            out.nodes.setdefault(current, [])
            continue
        m = _NODE.search(line)
        if m and current is not None:
            out.nodes[current].append((m.group(1), m.group(2)))
    return out


@contextlib.contextmanager
def captured_fd2() -> Iterator[Callable[[], str]]:
    """Redirect file descriptor 2 to a temporary file; yields a function returning what was written."""
    sys.stderr.flush()
    saved = os.dup(2)
    tmp = tempfile.TemporaryFile(mode="w+b")
    text: list[str] = []
    try:
        os.dup2(tmp.fileno(), 2)
        yield lambda: "".join(text)
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        tmp.seek(0)
        text.append(tmp.read().decode(errors="replace"))
        tmp.close()


def log_problems(log_text: str, limit: int = 20) -> list[str]:
    """The warning, error and fatal lines of an ONNX Runtime log (the TensorRT provider logs through
    it), terminal colour codes removed; at most `limit`, the last ones (closest to a failure)."""
    lines = [_COLOUR.sub("", ln).strip() for ln in log_text.splitlines() if _PROBLEM.search(ln)]
    return lines[-limit:]


def build_session_with_placement(ort: Any, model: str | bytes, opts: Any, providers: list) -> tuple[Any, Placement]:
    """An InferenceSession plus its node placement (verbose log captured during the build only).

    If the build raises (say the TensorRT provider's engine build fails), the log's warning and
    error lines are printed and carried in the BackendError raised from ORT's exception: the
    exception alone rarely says why.
    """
    severity = opts.log_severity_level
    opts.log_severity_level = 0          # VERBOSE: the placement lines
    try:
        with captured_fd2() as read:
            sess = ort.InferenceSession(model, opts, providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        problems = log_problems(read())
        for ln in problems:
            print(ln, file=sys.stderr)
        log_text = ("; ONNX Runtime log (warnings and errors): " + " | ".join(problems)) if problems else \
            "; ONNX Runtime logged no warning or error"
        raise BackendError(f"{type(exc).__name__}: {exc}{log_text}") from exc
    finally:
        opts.log_severity_level = severity
    log_text = read()
    placement = parse_placement(log_text)
    for ln in log_problems(log_text, limit=5):
        print(ln, file=sys.stderr)        # keep ORT's own warnings visible
    return sess, placement


def check_placement(placement: Placement, wanted: str, graph: str, *, allow_cpu_compute: bool = False) -> list[str]:
    """Notes on CPU-placed nodes of a GPU session; BackendError for compute nodes unless allowed.

    wanted: the provider asked for. A CPU session needs no check. An empty placement (ORT printed
    none) is refused too: an unverified GPU figure is not a GPU figure.
    """
    if wanted == "CPUExecutionProvider":
        return []
    if not placement:
        raise BackendError(f"{graph}: ONNX Runtime did not report node placement; cannot verify that {wanted} runs it")
    cpu = placement.get("CPUExecutionProvider", 0)
    if not cpu:
        return []
    listed = placement.nodes.get("CPUExecutionProvider", [])
    compute = [f"{op} ({name})" for op, name in listed if op not in CPU_OK_OPS]
    if not listed:                       # "All nodes placed on [CPUExecutionProvider]"
        compute = [f"all {cpu} nodes"]
    note = (f"{graph}: {cpu} of {sum(placement.values())} nodes on CPUExecutionProvider"
            + (f", compute: {', '.join(compute[:8])}{' ...' if len(compute) > 8 else ''}" if compute else
               " (shape ops only)"))
    if compute and not allow_cpu_compute:
        raise BackendError(f"{note}; asked for {wanted}: these nodes would fall back to CPU silently. Use "
                           "--provider cpu, or allow it explicitly (OnnxRuntimeBackend(allow_cpu_fallback=True))")
    return [note]


__all__ = ["CPU_OK_OPS", "Placement", "build_session_with_placement", "captured_fd2", "check_placement",
           "log_problems", "parse_placement"]
