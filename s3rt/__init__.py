"""s3rt: deployment runtime for the S3 video object segmentation model.

Folders map to subpackages: ``export/`` -> ``s3rt.export`` (needs torch), ``runtime/`` ->
``s3rt.runtime`` (torch-free), ``kernels/`` -> ``s3rt.kernels``, ``benchmarks/`` ->
``s3rt.benchmarks``.
"""

__version__ = "0.1.0"

from s3rt.errors import S3rtError  # noqa: E402

__all__ = ["S3rtError", "__version__"]
