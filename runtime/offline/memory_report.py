"""Per-frame memory report (`s3rt run --memory-report FILE`): token counts per bucket and the
long-term events of each frame (LONG_TERM_MEMORY.md §10). The sizes are a deterministic function
of the settings and of when objects were added/removed, so a report is also a regression trace.

JSON (FILE.json): settings + one record per frame with its buckets and events. CSV (any other
suffix): one row per frame and bucket: frame, name, bucket, objects, permanent, working,
long_term, events ("consolidate", "prune+consolidate", or empty).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from s3rt.runtime.tracker import FrameResult, Tracker

CSV_FIELDS = ("frame", "name", "bucket", "objects", "permanent", "working", "long_term", "events")


class MemoryReport:
    """Collects the tracker's memory sizes after every step; `write` saves JSON or CSV."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.frames: list[dict] = []

    def record(self, result: FrameResult, name: str | None = None) -> None:
        """Call after each tracker.step (the frame's writes, consolidations and prunings done)."""
        events = [{k: (None if isinstance(v, float) and v == float("inf") else v) for k, v in asdict(e).items()}
                  for e in self.tracker.long_term_events]      # gap inf (nothing left out) -> null
        self.frames.append({"frame": result.index, "name": name if name is not None else str(result.index),
                            "memory_written": result.memory_written, "buckets": self.tracker.memory_sizes(),
                            "events": events})

    def to_json(self) -> dict:
        s = self.tracker.settings
        lt = s.long_term
        geo = getattr(self.tracker, "graph_geo", None)
        return {"long_term": None if lt is None else lt.to_dict(), "mem_every": s.mem_every,
                "max_mem_frames": s.max_mem_frames, "top_k": self.tracker.top_k,
                "tokens_per_frame": geo.tokens if geo is not None else None,
                "state_bytes": self.tracker.buffer_nbytes(), "frames": self.frames}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
            return path
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_FIELDS)
            for fr in self.frames:
                for b in fr["buckets"]:
                    kinds = [e["kind"] for e in fr["events"] if e["bucket"] == b["bucket"]]
                    w.writerow([fr["frame"], fr["name"], b["bucket"], " ".join(map(str, b["objects"])),
                                b["permanent"], b["working"], b["long_term"], "+".join(kinds)])
        return path
