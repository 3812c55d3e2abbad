"""Typed control operations of a stream: what a client asks for besides frames.

A control travels in the stream's inbox in order with the frames around it. Mask controls
(`AddObjects`, `UpdateObjects`) come with the frame their mask belongs to; that frame is part of
the control, so it is never superseded or dropped. The session dispatches on these types with
`match`; transports build them from their own messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Union

import numpy as np

from s3rt.runtime.serving.messages import ObjectId


@dataclass(frozen=True)
class AddObjects:
    """Start tracking new objects: `mask` (H0, W0) index mask on the control's frame.

    ids: mask value -> user id (None: the values are the ids). labels: wanted user id -> label
    (each free, 1..65535; default: the smallest free label).
    """

    mask: np.ndarray
    ids: Mapping[int, ObjectId] | None = None
    labels: Mapping[ObjectId, int] | None = None
    op: ClassVar[str] = "add"


@dataclass(frozen=True)
class UpdateObjects:
    """Re-give the masks of tracked objects on the control's frame (others keep their prediction)."""

    mask: np.ndarray
    ids: Mapping[int, ObjectId] | None = None
    op: ClassVar[str] = "update"


@dataclass(frozen=True)
class RemoveObjects:
    ids: tuple[ObjectId, ...] = field(default_factory=tuple)
    op: ClassVar[str] = "remove"


@dataclass(frozen=True)
class Reset:
    """Forget every object and the memory; buffers stay allocated for same-sized frames."""

    op: ClassVar[str] = "reset"


MaskControl = Union[AddObjects, UpdateObjects]
Control = Union[AddObjects, UpdateObjects, RemoveObjects, Reset]
