"""Score a DAVIS-2017 run from Python and print the full result as JSON (the scoring library is
s3rt.runtime.evaluation.davis; `s3rt eval` prints the markdown table):

    python -m s3rt.benchmarks.davis_eval PRED GT
"""

from __future__ import annotations

import json
import sys

from s3rt.runtime.evaluation.davis import evaluate_davis

if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(evaluate_davis(sys.argv[1], sys.argv[2]), indent=2))
