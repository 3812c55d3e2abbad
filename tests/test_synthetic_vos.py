"""The training/demo clip generator: deterministic, and its masks describe its frames."""

from __future__ import annotations

import numpy as np
import pytest

from s3rt.errors import ConfigError
from s3rt.training.synthetic_vos import ClipSpec, generate_clip, random_spec

SPEC = ClipSpec(num_frames=10, height=64, width=96, num_objects=3, num_distractors=2, enter_after=(6,))


def test_same_seed_same_bytes_other_seed_other_clip():
    f1, m1 = generate_clip(SPEC, seed=7)
    f2, m2 = generate_clip(SPEC, seed=7)
    f3, _ = generate_clip(SPEC, seed=8)
    assert f1.shape == (10, 64, 96, 3) and f1.dtype == np.uint8
    assert m1.shape == (10, 64, 96) and m1.dtype == np.uint8
    assert np.array_equal(f1, f2) and np.array_equal(m1, m2)
    assert not np.array_equal(f1, f3)


def test_ids_and_entering_object():
    for seed in range(6):
        _, masks = generate_clip(SPEC, seed=seed)
        assert set(np.unique(masks)) <= {0, 1, 2, 3}
        assert not (masks[:6] == 3).any(), "target 3 enters on frame 6 and must be absent before"
        # a bouncing target stays inside the frame; it may only hide behind a distractor
        assert (masks[6:] == 3).any()


def test_masks_match_the_drawn_pixels():
    """No distractors: outside the masks every pixel is the bare background, byte for byte;
    inside, the object's texture replaced it (almost every pixel differs)."""
    spec = ClipSpec(num_frames=6, height=64, width=96, num_objects=3, num_distractors=0, enter_after=(3,))
    for seed in range(4):
        frames, masks, background = generate_clip(spec, seed=seed, with_background=True)
        for t in range(spec.num_frames):
            out = masks[t] == 0
            assert np.array_equal(frames[t][out], background[t][out]), f"seed {seed} frame {t}"
            for k in np.unique(masks[t])[1:]:
                inside = masks[t] == k
                differs = (np.abs(frames[t].astype(int) - background[t].astype(int)).max(-1) > 3)[inside]
                assert differs.mean() > 0.8, f"seed {seed} frame {t} object {k}: {differs.mean():.2f}"
            expected = {1, 2} | ({3} if t >= 3 else set())
            visible = set(np.unique(masks[t]).tolist()) - {0}
            assert visible <= expected


def test_background_pans():
    spec = ClipSpec(num_frames=3, height=64, width=96, num_objects=1, num_distractors=0, pan=1.0)
    _, _, background = generate_clip(spec, seed=2, with_background=True)
    assert not np.array_equal(background[0], background[2])


def test_distractors_are_not_in_the_masks():
    plain = ClipSpec(num_frames=3, height=64, width=96, num_objects=1, num_distractors=0)
    busy = ClipSpec(num_frames=3, height=64, width=96, num_objects=1, num_distractors=3)
    f_plain, _ = generate_clip(plain, seed=11)
    f_busy, m_busy = generate_clip(busy, seed=11)
    assert set(np.unique(m_busy)) <= {0, 1}
    changed = (f_plain != f_busy).any(-1)          # pixels the distractors (and new random draws) touched
    assert changed.any()


def test_bad_specs_raise_config_error():
    with pytest.raises(ConfigError, match="too small"):
        generate_clip(ClipSpec(height=16, width=96), 0)
    with pytest.raises(ConfigError, match="present on frame 0"):
        generate_clip(ClipSpec(num_objects=1, enter_after=(2,)), 0)
    with pytest.raises(ConfigError, match="enter_after"):
        generate_clip(ClipSpec(num_frames=4, num_objects=2, enter_after=(9,)), 0)


def test_random_spec_is_seeded():
    a = random_spec(np.random.default_rng(5), num_frames=5, height=64, width=128)
    b = random_spec(np.random.default_rng(5), num_frames=5, height=64, width=128)
    assert a == b and 1 <= a.num_objects <= 3


def _sha(*arrays: np.ndarray) -> str:
    import hashlib
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()[:16]


def test_clips_the_shipped_weights_were_scored_on_keep_their_pixels():
    """The generator moved onto s3rt.runtime.io.synthetic (training adds distractors on top); these
    digests were taken before the move, from the clips RECIPE.md's J&F figures and the parity tests
    use: 8 held-out 30-frame 96x160 clips, the 4 INT8 calibration clips, the demo test's clip and
    the 100-frame parity clip. Any change to the shared generator that touches them fails here."""
    from s3rt.benchmarks.parity_diagnosis import parity_clip
    from s3rt.training.evaluate import HELD_OUT_SEED, held_out_clips

    held = held_out_clips(8, num_frames=30, height=96, width=160)
    assert [c.name for c in held] == [f"heldout_{HELD_OUT_SEED + i}" for i in range(8)]
    assert _sha(*[c.frames for c in held], *[c.masks for c in held]) == "ba28092d5949682a"
    calib = held_out_clips(4, num_frames=30, height=96, width=160, seed=HELD_OUT_SEED + 1_000_000)
    assert _sha(*[c.frames for c in calib], *[c.masks for c in calib]) == "09d772f14e8cc8a0"
    demo = held_out_clips(1, num_frames=8, height=64, width=96)[0]
    assert _sha(demo.frames, demo.masks) == "f2a7506a67dc2722"
    assert _sha(*parity_clip()) == "4d66a4c1babaddc1"
    assert _sha(*generate_clip(SPEC, 7, with_background=True)) == "52f4b87ffa2711b4"
