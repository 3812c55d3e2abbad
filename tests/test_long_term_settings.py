"""Long-term memory settings: presets equal the reference configs (spec 8.1/8.2), and every
illegal combination of spec section 2 is refused with a ConfigError that names the problem."""

from __future__ import annotations

import argparse

import pytest

from s3rt.cli.common import add_loop_args, loop_settings
from s3rt.errors import ConfigError
from s3rt.long_term_config import CUTIE, PRESETS, S3, LongTermConfig, long_term_from


def _parse(*argv: str):
    p = argparse.ArgumentParser()
    add_loop_args(p)
    return loop_settings(p.parse_args(list(argv)))


def test_presets_are_the_reference_blocks():
    assert (CUTIE.max_mem_frames, CUTIE.min_mem_frames, CUTIE.num_prototypes, CUTIE.max_num_tokens,
            CUTIE.buffer_tokens, CUTIE.count_usage) == (10, 5, 128, 10000, 2000, True)
    assert (S3.max_mem_frames, S3.min_mem_frames, S3.num_prototypes, S3.max_num_tokens,
            S3.buffer_tokens) == (25, 15, 128, 30000, 3000)
    assert set(PRESETS) >= {"cutie", "s3"}
    # derived quantities of spec 2 / 8.1: F_max 9, F_min 4, keep 7872
    assert (CUTIE.work_frames_max, CUTIE.work_frames_min, CUTIE.keep_after_prune) == (9, 4, 7872)
    assert CUTIE.candidates(1620) == 8100


def test_cli_off_by_default_and_presets():
    assert _parse().long_term is None
    assert _parse("--long-term").long_term == CUTIE
    assert _parse("--lt-preset", "s3").long_term == S3
    lt = _parse("--lt-preset", "s3", "--lt-prototypes", "64", "--lt-count-usage", "true").long_term
    assert lt.num_prototypes == 64 and lt.max_num_tokens == 30000
    # long-term memory sizes the ring by its own frame counts, not --max-mem-frames
    s = _parse("--long-term", "--max-buckets", "2")
    assert s.memory_slots == 2 + 9


@pytest.mark.parametrize("fields, message", [
    ({"min_mem_frames": 0}, "lt-min-mem-frames must be >= 1"),
    ({"max_mem_frames": 5, "min_mem_frames": 5}, "must be larger than lt-min-mem-frames"),
    ({"max_mem_frames": 3, "min_mem_frames": 6}, "must be larger than lt-min-mem-frames"),
    ({"num_prototypes": 0}, "lt-prototypes must be >= 1"),
    ({"buffer_tokens": -1}, "lt-buffer-tokens must be >= 0"),
    ({"max_num_tokens": 100, "num_prototypes": 64, "buffer_tokens": 40},
     r"lt-max-tokens \(100\) must be at least lt-prototypes \+ lt-buffer-tokens"),
    ({"count_usage": False}, "needs count_usage=True"),
])
def test_bad_settings(fields, message):
    with pytest.raises(ConfigError, match=message):
        long_term_from("cutie", **fields)


def test_settings_that_depend_on_tokens_per_frame():
    lt = LongTermConfig(max_mem_frames=4, min_mem_frames=2, num_prototypes=200, max_num_tokens=400, buffer_tokens=0)
    with pytest.raises(ConfigError, match=r"lt-prototypes \(200\) larger than the candidates.*= 128"):
        lt.check_tokens(64, top_k=30)
    with pytest.raises(ConfigError, match=r"top_k \(30\) larger than the tokens of one frame \(24\)"):
        long_term_from("small").check_tokens(24, top_k=30)
    long_term_from("small").check_tokens(64, top_k=30)      # spec 8.3: legal


def test_cli_errors():
    with pytest.raises(ConfigError, match="without --long-term"):
        _parse("--lt-prototypes", "16")
    with pytest.raises(ConfigError, match="needs count_usage=True"):
        _parse("--long-term", "--lt-count-usage", "false")
    with pytest.raises(ConfigError, match="must be larger than lt-min-mem-frames"):
        _parse("--long-term", "--lt-max-mem-frames", "5")
    with pytest.raises(ConfigError, match="unknown long-term preset"):
        long_term_from("lvos")


def test_tie_rule_is_stable_lower_index_first():
    """Spec 9.5: s3rt's documented rule for prototype choice and pruning survivors."""
    import numpy as np

    from s3rt.runtime.long_term import boundary_gap, top_by_usage
    u = np.array([0.0, 0.5, 0.0, 0.5, 0.2, 0.0], np.float32)
    assert top_by_usage(u, 4).tolist() == [1, 3, 4, 0]        # equal values: lower index first
    assert top_by_usage(np.zeros(10, np.float32), 3).tolist() == [0, 1, 2]
    assert boundary_gap(u, 2) == np.float32(0.3) and boundary_gap(u, 5) == 0.0 and boundary_gap(u, 6) == float("inf")
