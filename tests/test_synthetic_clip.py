"""The shared clip generator's guarantees beyond determinism (tests/test_video_bench.py covers that)."""

from __future__ import annotations

import numpy as np

from s3rt.runtime.io import synthetic
from s3rt.runtime.io.synthetic import MAX_PAN_MARGIN, background, iter_clip, make_clip


def test_long_clips_keep_a_bounded_background_and_stay_annotated():
    """A 10,000-frame bench stream must not allocate a background that grows with its length."""
    bg = background(np.random.default_rng(0), 10_000, 48, 64, pan=0.5)
    assert bg.margin == MAX_PAN_MARGIN and bg.texture.shape == (48 + 2 * MAX_PAN_MARGIN, 64 + 2 * MAX_PAN_MARGIN, 3)
    windows = [bg.at(t, 48, 64) for t in (0, 1000, 5000, 9999)]
    assert all(w.shape == (48, 64, 3) for w in windows)             # the pan reflects inside the texture
    for t, (frame, mask) in enumerate(iter_clip(1200, 32, 32, num_objects=1, seed=3)):
        assert frame.shape == (32, 32, 3) and (mask == 1).sum() > 0, t   # a lone blob never leaves the frame
    streamed = list(iter_clip(5, 32, 32, num_objects=2, seed=3))
    listed = make_clip(5, 32, 32, 2, seed=3)
    assert all(np.array_equal(f, g) and np.array_equal(m, n) for (f, m), g, n in zip(streamed, *listed))


def test_blobs_start_inside_disjoint_cells():
    for h, w, k in ((16, 16, 8), (60, 100, 2), (31, 45, 5)):
        blobs = synthetic.grid_blobs(np.random.default_rng(1), k, h, w)
        masks = make_clip(1, h, w, k, seed=1)[1][0]
        assert set(np.unique(masks)) == set(range(k + 1)), (h, w, k)
        assert [b.label for b in blobs] == list(range(1, k + 1)) and all(b.keep_inside for b in blobs)
