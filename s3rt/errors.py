"""One error hierarchy: user-facing errors derive from S3rtError, broken invariants do not.

The CLI prints an S3rtError as one line and exits 1; anything else is a bug and keeps its
traceback.
"""


class S3rtError(Exception):
    """A problem the user can fix (bad input, missing file, wrong setting)."""


class ConfigError(S3rtError):
    """Unknown model config or an option that contradicts another."""


class CheckpointError(S3rtError):
    """A checkpoint that does not fit the model it is loaded into."""


class ShapeError(S3rtError):
    """A tensor or image whose shape does not match what the graph/tracker expects."""


class InputError(S3rtError):
    """Unreadable or unsupported input data (frames, masks, videos, folders)."""


class OutputError(S3rtError):
    """An output could not be written (full disk, read-only or missing folder)."""


class ObjectIdError(S3rtError):
    """Unknown, duplicate, empty or out-of-range object ids."""


class CapacityError(S3rtError):
    """The fixed-capacity state (objects, buckets, memory slots) would overflow."""


class StateError(S3rtError):
    """A call made out of order (e.g. step() before any object was added)."""


class MissingDependencyError(S3rtError):
    """An optional dependency needed by the requested feature is not installed."""


class ModelFormatError(S3rtError):
    """Exported graphs / manifests / engines that are missing, corrupt or incompatible."""


class BackendError(S3rtError):
    """A backend that cannot run here (no GPU, provider unavailable, engine mismatch)."""


class InternalError(Exception):
    """A broken internal invariant: a bug in s3rt, not a user error."""


class RosMessageError(InputError):
    """A ROS message that cannot be converted (unsupported encoding, wrong step, truncated data)."""


class BagError(InputError):
    """A bag that cannot be replayed (missing, empty, topic absent, wrong message type)."""


class StreamClosedError(StateError):
    """An operation on a serving stream that was closed (by the client, an idle timeout or shutdown)."""
