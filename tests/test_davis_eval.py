"""s3rt.runtime.evaluation.davis against a loop-based re-statement of the official DAVIS-2017 tool.

The oracle below follows davisvideochallenge/davis2017-evaluation (davis.py, results.py,
evaluation.py, metrics.py, utils.py, evaluation_method.py) step by step: per object, per frame,
with the official formulas, so every number of the vectorised implementation can be checked
to 1e-6 on synthetic data.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s3rt.runtime.evaluation import davis as de
from s3rt.cli.main import main
from s3rt.errors import InputError, ObjectIdError, S3rtError, ShapeError

TOL = 1e-6


# ============================================================================================
# Oracle: non-vectorised re-statement of the official algorithm
# ============================================================================================

def oracle_disk(r):
    """skimage.morphology.disk(r): 1 where x**2 + y**2 <= r**2 on the (2r+1)^2 grid."""
    out = np.zeros((2 * r + 1, 2 * r + 1), dtype=np.uint8)
    for y in range(-r, r + 1):
        for x in range(-r, r + 1):
            if x * x + y * y <= r * r:
                out[y + r, x + r] = 1
    return out


def oracle_seg2bmap(seg):
    """metrics._seg2bmap with width/height = the mask's own (shift formulation)."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def oracle_seg2bmap_loops(seg):
    """The same rule, pixel by pixel."""
    seg = seg.astype(bool)
    h, w = seg.shape

    def at(y, x):
        return bool(seg[y, x]) if (y < h and x < w) else False

    b = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            c = at(y, x)
            if y == h - 1 and x == w - 1:
                b[y, x] = False
            elif x == w - 1:
                b[y, x] = c ^ at(y + 1, x)
            elif y == h - 1:
                b[y, x] = c ^ at(y, x + 1)
            else:
                b[y, x] = (c ^ at(y, x + 1)) or (c ^ at(y + 1, x)) or (c ^ at(y + 1, x + 1))
    return b


def oracle_dilate(b, kernel):
    """cv2.dilate(b, kernel) (default border adds nothing): max over the kernel's offsets."""
    h, w = b.shape
    kh, kw = kernel.shape
    ry, rx = kh // 2, kw // 2
    padded = np.zeros((h + 2 * ry, w + 2 * rx), dtype=np.uint8)
    padded[ry:ry + h, rx:rx + w] = b
    out = np.zeros((h, w), dtype=np.uint8)
    for i in range(kh):
        for j in range(kw):
            if kernel[i, j]:
                out = np.maximum(out, padded[i:i + h, j:j + w])
    return out


def oracle_iou(annotation, segmentation):
    """metrics.db_eval_iou for one frame, no void pixels."""
    annotation = annotation.astype(bool)
    segmentation = segmentation.astype(bool)
    inters = np.sum(segmentation & annotation)
    union = np.sum(segmentation | annotation)
    if np.isclose(union, 0):
        return 1
    return inters / union


def oracle_f(foreground_mask, gt_mask, bound_th=0.008):
    """metrics.f_measure for one frame, no void pixels."""
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(foreground_mask.shape))
    fg_boundary = oracle_seg2bmap(foreground_mask)
    gt_boundary = oracle_seg2bmap(gt_mask)
    kernel = oracle_disk(int(bound_pix))
    fg_dil = oracle_dilate(fg_boundary.astype(np.uint8), kernel)
    gt_dil = oracle_dilate(gt_boundary.astype(np.uint8), kernel)
    gt_match = gt_boundary * fg_dil
    fg_match = fg_boundary * gt_dil
    n_fg = np.sum(fg_boundary)
    n_gt = np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(fg_match) / float(n_fg)
        recall = np.sum(gt_match) / float(n_gt)
    if precision + recall == 0:
        return 0
    return 2 * precision * recall / (precision + recall)


def oracle_statistics(per_frame_values):
    """utils.db_statistics."""
    per_frame_values = np.asarray(per_frame_values, dtype=np.float64)
    m = np.nanmean(per_frame_values)
    o = np.nanmean(per_frame_values > 0.5)
    n_bins = 4
    ids = np.round(np.linspace(1, len(per_frame_values), n_bins + 1) + 1e-10) - 1
    ids = ids.astype(np.uint8)
    d_bins = [per_frame_values[ids[i]:ids[i + 1] + 1] for i in range(4)]
    d = np.nanmean(d_bins[0]) - np.nanmean(d_bins[3])
    return m, o, d


class OracleObjectError(Exception):
    pass


def oracle_sequence(pred_dir, gt_dir, seq):
    """davis.get_all_masks + results.read_masks + _evaluate_semisupervised for one sequence.

    Returns per-object lists of per-frame J and F (object k at index k-1)."""
    names = sorted(p.name for p in (Path(gt_dir) / seq).glob("*.png"))
    first = np.array(Image.open(Path(gt_dir) / seq / names[0]))
    masks = np.zeros((len(names), *first.shape))
    for i, n in enumerate(names):
        masks[i] = np.array(Image.open(Path(gt_dir) / seq / n))
        masks[i][masks[i] == 255] = 0
    num_objects = int(np.max(masks[0]))
    eval_names = names[1:-1]
    res = np.zeros((len(eval_names), *first.shape))
    for i, n in enumerate(eval_names):
        res[i] = np.array(Image.open(Path(pred_dir) / seq / n))
    num_res = int(np.max(res))
    if num_res > num_objects:
        raise OracleObjectError(seq)
    js, fs = [], []
    for k in range(1, num_objects + 1):
        jk, fk = [], []
        for t, _ in enumerate(eval_names):
            gt_mask = masks[t + 1] == k
            res_mask = res[t] == k  # objects above num_res: zero padding == empty mask
            jk.append(oracle_iou(gt_mask, res_mask))
            fk.append(oracle_f(res_mask, gt_mask))
        js.append(jk)
        fs.append(fk)
    return js, fs


def oracle_evaluate(pred_dir, gt_dir, sequences):
    """evaluation.DAVISEvaluation.evaluate + evaluation_method.py's global table."""
    jm, jr, jd, fm, fr, fd = [], [], [], [], [], []
    per_seq = {}
    for seq in sequences:
        js, fs = oracle_sequence(pred_dir, gt_dir, seq)
        per_seq[seq] = {}
        for ii in range(len(js)):
            m, r, d = oracle_statistics(js[ii])
            jm.append(m)
            jr.append(r)
            jd.append(d)
            m2, r2, d2 = oracle_statistics(fs[ii])
            fm.append(m2)
            fr.append(r2)
            fd.append(d2)
            per_seq[seq][str(ii + 1)] = {"J": m, "F": m2}
    return {
        "J&F": (np.mean(jm) + np.mean(fm)) / 2.0,
        "J": {"mean": np.mean(jm), "recall": np.mean(jr), "decay": np.mean(jd)},
        "F": {"mean": np.mean(fm), "recall": np.mean(fr), "decay": np.mean(fd)},
        "sequences": per_seq,
    }


# ============================================================================================
# Synthetic DAVIS-like data
# ============================================================================================

PALETTE = [v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 151) % 256)]


def save_palette_png(arr, path):
    img = Image.fromarray(np.asarray(arr, dtype=np.uint8))
    img.putpalette(PALETTE)
    assert img.mode == "P"
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def blob(h, w, cy, cx, ry, rx, rng, wobble=0.25):
    """Random-ish blob: an ellipse with a noisy radius."""
    yy, xx = np.mgrid[:h, :w]
    ang = np.arctan2(yy - cy, xx - cx)
    k = rng.uniform(-wobble, wobble, 3)
    scale = 1 + k[0] * np.sin(2 * ang) + k[1] * np.cos(3 * ang) + k[2] * np.sin(5 * ang)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= scale ** 2


def make_sequence(rng, h, w, t, n_obj, *, gt_absent=(), pred_absent=(), void=True,
                  first_ids=None, border_obj=None):
    """gt (t, h, w) and pred (t, h, w) label arrays.

    gt_absent / pred_absent: (object, frame) pairs where that object is missing."""
    gt = np.zeros((t, h, w), dtype=np.uint8)
    pred = np.zeros((t, h, w), dtype=np.uint8)
    ids = list(first_ids) if first_ids is not None else list(range(1, n_obj + 1))
    for obj in ids:
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        vy, vx = rng.normal(0, 0.02 * h), rng.normal(0, 0.02 * w)
        ry, rx = rng.uniform(0.08, 0.25) * h, rng.uniform(0.08, 0.25) * w
        if obj == border_obj:  # touches the last row and column
            cy, cx, vy, vx = h - 2, w - 2, 0.0, 0.0
        for f in range(t):
            if (obj, f) not in gt_absent:
                gt[f][blob(h, w, cy + vy * f, cx + vx * f, ry, rx, rng)] = obj
            if (obj, f) not in pred_absent:
                dy, dx = rng.normal(0, 1.5, 2)
                m = blob(h, w, cy + vy * f + dy, cx + vx * f + dx, ry * rng.uniform(0.8, 1.2),
                         rx * rng.uniform(0.8, 1.2), rng)
                m &= rng.random((h, w)) > 0.03  # speckle
                pred[f][m] = obj
    if void:
        # void band around object borders plus a void rectangle, in every frame
        for f in range(t):
            labels = gt[f]
            edge = seg_edges(labels)
            gt[f][edge & (rng.random((h, w)) > 0.5)] = 255
        gt[:, h // 3:h // 3 + 3, w // 4:w // 4 + 5] = 255
    return gt, pred


def seg_edges(labels):
    e = np.zeros(labels.shape, dtype=bool)
    e[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    e[1:, :] |= labels[1:, :] != labels[:-1, :]
    return e


def write_sequence(root_gt, root_pred, name, gt, pred):
    for f in range(gt.shape[0]):
        save_palette_png(gt[f], root_gt / name / f"{f:05d}.png")
    for f in range(1, gt.shape[0] - 1):  # predictions for the evaluated frames only
        save_palette_png(pred[f], root_pred / name / f"{f:05d}.png")


SEQUENCES = ("aa-odd", "bb-radius4", "cc-gap", "dd-empty")


@pytest.fixture(scope="module")
def davis(tmp_path_factory):
    rng = np.random.default_rng(2017)
    root = tmp_path_factory.mktemp("davis")
    gt_dir, pred_dir = root / "gt", root / "pred"
    arrays = {}

    # 9 frames -> 7 evaluated (uneven decay bins), odd size, 3 objects, void, objects missing
    gt, pred = make_sequence(rng, 41, 57, 9, 3,
                             gt_absent={(2, 3), (2, 4), (3, 6)},
                             pred_absent={(2, 3), (1, 5), (3, 2), (3, 7)})
    pred[4] = 0  # an all-empty prediction frame
    arrays["aa-odd"] = (gt, pred)

    # bigger frames: bound_pix = ceil(0.008 * 416.6) = 4; object 2 vanishes from the GT while
    # the prediction keeps it (no GT boundary), and is never predicted in some frames
    gt, pred = make_sequence(rng, 250, 333, 12, 2,
                             gt_absent={(2, f) for f in range(6, 12)},
                             pred_absent={(2, 2), (2, 3), (1, 9)})
    arrays["bb-radius4"] = (gt, pred)

    # first GT frame holds ids {1, 3}: the official tool evaluates objects 1..3, object 2 with an
    # all-empty GT (both-empty frames -> 1); id 2 predicted in one frame; object 3 on the border
    gt, pred = make_sequence(rng, 31, 45, 6, 3, first_ids=(1, 3), border_obj=3,
                             pred_absent={(1, 2)})
    pred[2][3:8, 4:9] = 2
    arrays["cc-gap"] = (gt, pred)

    # empty first GT frame: no objects, contributes nothing
    gt = np.zeros((4, 20, 23), dtype=np.uint8)
    gt[0, 2:5, 2:5] = 255
    gt[2, 5:9, 5:9] = 1  # appears later: not an object (ids come from the first frame)
    pred = np.zeros_like(gt)
    arrays["dd-empty"] = (gt, pred)

    for name, (g, p) in arrays.items():
        write_sequence(gt_dir, pred_dir, name, g, p)
    # sanity on the synthetic data: it exercises what it claims to
    g, p = arrays["aa-odd"]
    assert (g == 255).any() and not (p[4] > 0).any()
    assert not (g[3] == 2).any() and not (p[3] == 2).any()  # both empty
    return {"gt": gt_dir, "pred": pred_dir, "arrays": arrays, "root": root}


def assert_close_results(got, want):
    assert got["J&F"] == pytest.approx(want["J&F"], abs=TOL)
    for key in ("J", "F"):
        for stat in ("mean", "recall", "decay"):
            assert got[key][stat] == pytest.approx(want[key][stat], abs=TOL), (key, stat)
    assert list(got["sequences"]) == list(want["sequences"])
    for seq, objs in want["sequences"].items():
        assert list(got["sequences"][seq]) == list(objs), seq
        for obj, vals in objs.items():
            for key in ("J", "F"):
                assert got["sequences"][seq][obj][key] == pytest.approx(vals[key], abs=TOL), (seq, obj, key)


# ============================================================================================
# Building blocks
# ============================================================================================

@pytest.mark.parametrize("r", list(range(0, 13)))
def test_disk_matches_formula(r):
    d = de.disk(r)
    assert d.shape == (2 * r + 1, 2 * r + 1)
    assert np.array_equal(d.astype(np.uint8), oracle_disk(r))


def test_boundary_radius():
    for h, w in [(480, 854), (480, 910), (1080, 1920), (41, 57), (250, 333), (1, 1)]:
        want = int(np.ceil(0.008 * math.hypot(h, w)))
        assert de.boundary_radius(h, w) == want
    assert de.boundary_radius(480, 854) == 8
    assert de.boundary_radius(480, 854, bound_th=3) == 3


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 2), (5, 9), (13, 11), (31, 44)])
def test_seg2bmap_matches_oracle_on_odd_sizes(shape):
    rng = np.random.default_rng(sum(shape))
    for density in (0.0, 0.2, 0.5, 0.9, 1.0):
        seg = rng.random(shape) < density
        want = oracle_seg2bmap_loops(seg)
        assert np.array_equal(oracle_seg2bmap(seg), want)
        assert np.array_equal(de.seg2bmap(seg), want)
    stack = rng.random((3, 2, *shape)) < 0.4  # leading axes are vectorised
    got = de.seg2bmap(stack)
    for i in range(3):
        for j in range(2):
            assert np.array_equal(got[i, j], oracle_seg2bmap_loops(stack[i, j]))


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (9, 4), (17, 23), (40, 31)])
def test_dilate_disk_matches_naive(shape):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    maps = rng.random((4, *shape)) < 0.06
    maps[0] = False
    maps[1, -1, -1] = True
    maps[2, 0, 0] = True
    for r in (0, 1, 2, 3, 5, 8, 25):
        got = de.dilate_disk(maps, r)
        for i in range(maps.shape[0]):
            want = oracle_dilate(maps[i].astype(np.uint8), oracle_disk(r)).astype(bool)
            assert np.array_equal(got[i], want), (shape, r, i)


def test_dilate_disk_matches_cv2():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    maps = rng.random((3, 61, 87)) < 0.02
    for r in (1, 4, 8):
        got = de.dilate_disk(maps, r)
        for i in range(3):
            want = cv2.dilate(maps[i].astype(np.uint8), de.disk(r).astype(np.uint8)).astype(bool)
            assert np.array_equal(got[i], want)


def test_frame_metrics_match_oracle():
    rng = np.random.default_rng(11)
    h, w = 53, 67
    cases = []
    for _ in range(12):
        cases.append((blob(h, w, *rng.uniform(10, 40, 2), *rng.uniform(4, 15, 2), rng),
                      blob(h, w, *rng.uniform(10, 40, 2), *rng.uniform(4, 15, 2), rng)))
    empty = np.zeros((h, w), dtype=bool)
    full = np.ones((h, w), dtype=bool)
    cases += [(empty, empty), (empty, cases[0][1]), (cases[0][0], empty), (full, full),
              (full, empty), (cases[1][0], cases[1][0])]
    gt = np.stack([c[0] for c in cases])
    pred = np.stack([c[1] for c in cases])
    j = de.jaccard(gt, pred)
    f = de.f_measure(gt, pred)
    for i, (g, p) in enumerate(cases):
        assert j[i] == pytest.approx(oracle_iou(g, p), abs=1e-12)
        assert f[i] == pytest.approx(oracle_f(p, g), abs=1e-12)
    assert float(de.jaccard(empty, empty)) == 1.0 and float(de.f_measure(empty, empty)) == 1.0
    assert float(de.f_measure(cases[0][0], empty)) == 0.0  # gt boundary, no predicted boundary
    assert float(de.f_measure(gt[0], pred[0])) == pytest.approx(oracle_f(pred[0], gt[0]), abs=1e-12)


@pytest.mark.parametrize("n", list(range(1, 30)) + [101])
def test_db_statistics_matches_oracle(n):
    rng = np.random.default_rng(n)
    x = rng.random((3, n))
    x[1] = np.round(x[1])  # exact 0/1 values, some exactly at 0.5 never count as recall
    x[2, : n // 2] = 0.5
    m, r, d = de.db_statistics(x)
    for i in range(3):
        om, orr, od = oracle_statistics(x[i])
        assert m[i] == pytest.approx(om, abs=1e-12)
        assert r[i] == pytest.approx(orr, abs=1e-12)
        assert d[i] == pytest.approx(od, abs=1e-12)


# ============================================================================================
# Whole evaluation vs oracle
# ============================================================================================

def test_per_frame_scores_match_oracle(davis):
    for name in SEQUENCES:
        gt, pred = davis["arrays"][name]
        scores = de.evaluate_sequence(gt, pred[1:-1], name=name)
        js, fs = oracle_sequence(davis["pred"], davis["gt"], name)
        assert scores.object_ids == list(range(1, len(js) + 1))
        assert scores.j.shape == (len(js), gt.shape[0] - 2)
        if js:
            np.testing.assert_allclose(scores.j, np.array(js, dtype=float), rtol=0, atol=TOL)
            np.testing.assert_allclose(scores.f, np.array(fs, dtype=float), rtol=0, atol=TOL)


def test_synthetic_data_covers_special_cases(davis):
    """The fixture exercises both-empty frames, gt-only / pred-only objects and the id gap."""
    js, fs = oracle_sequence(davis["pred"], davis["gt"], "aa-odd")
    assert 1 in js[1] and 1 in fs[1]  # object 2 in frame 3: absent from GT and prediction
    js, fs = oracle_sequence(davis["pred"], davis["gt"], "bb-radius4")
    assert 0 in fs[1]  # predicted but absent from the GT (no GT boundary): F = 0
    js, _ = oracle_sequence(davis["pred"], davis["gt"], "cc-gap")
    assert len(js) == 3 and js[1].count(1) == len(js[1]) - 1  # object 2: empty GT throughout
    assert oracle_sequence(davis["pred"], davis["gt"], "dd-empty") == ([], [])


def test_evaluate_davis_matches_oracle(davis):
    got = de.evaluate_davis(davis["pred"], davis["gt"], progress=False)
    want = oracle_evaluate(davis["pred"], davis["gt"], SEQUENCES)
    assert_close_results(got, want)
    assert got["sequences"]["dd-empty"] == {}
    assert set(got["sequences"]["cc-gap"]) == {"1", "2", "3"}
    json.dumps(got)  # plain JSON types only
    assert all(isinstance(v, float) for v in (got["J&F"], *got["J"].values(), *got["F"].values()))


def test_evaluate_davis_subset_of_sequences(davis):
    got = de.evaluate_davis(davis["pred"], davis["gt"], sequences=["cc-gap", "aa-odd"], progress=False)
    want = oracle_evaluate(davis["pred"], davis["gt"], ["cc-gap", "aa-odd"])
    assert_close_results(got, want)
    got2 = de.evaluate_davis(davis["pred"], davis["gt"], sequences="cc-gap,aa-odd", progress=False)
    assert got2 == got


def test_perfect_prediction_scores_one(tmp_path):
    rng = np.random.default_rng(3)
    gt, _ = make_sequence(rng, 30, 40, 5, 2, void=False)
    write_sequence(tmp_path / "gt", tmp_path / "pred", "s", gt, gt)
    res = de.evaluate_davis(tmp_path / "pred", tmp_path / "gt", progress=False)
    assert res["J&F"] == 1.0 and res["J"]["recall"] == 1.0 and res["F"]["decay"] == 0.0


def test_grayscale_label_pngs_are_read(tmp_path, davis):
    """8-bit 'L' label PNGs hold the same ids as palette PNGs (the official reader accepts both)."""
    pred = tmp_path / "pred"
    shutil.copytree(davis["pred"] / "aa-odd", pred / "aa-odd")
    for p in (pred / "aa-odd").glob("*.png"):
        Image.fromarray(np.array(Image.open(p))).save(p)  # mode 'L'
    assert Image.open(next((pred / "aa-odd").glob("*.png"))).mode == "L"
    got = de.evaluate_davis(pred, davis["gt"], sequences=["aa-odd"], progress=False)
    want = de.evaluate_davis(davis["pred"], davis["gt"], sequences=["aa-odd"], progress=False)
    assert got == want


# ============================================================================================
# Errors
# ============================================================================================

@pytest.fixture()
def pred_copy(tmp_path, davis):
    dst = tmp_path / "pred"
    shutil.copytree(davis["pred"], dst)
    return dst


def test_unknown_object_id_in_prediction(pred_copy, davis):
    frame = pred_copy / "aa-odd" / "00005.png"
    arr = np.array(Image.open(frame))
    arr[0:3, 0:3] = 4  # the first GT frame has objects 1..3
    save_palette_png(arr, frame)
    with pytest.raises(ObjectIdError) as err:
        de.evaluate_davis(pred_copy, davis["gt"], progress=False)
    msg = str(err.value)
    assert isinstance(err.value, S3rtError)
    assert "aa-odd" in msg and "[4]" in msg and "00005" in msg and "1..3" in msg
    with pytest.raises(OracleObjectError):  # the official tool refuses it too
        oracle_sequence(pred_copy, davis["gt"], "aa-odd")


def test_void_label_in_prediction_is_rejected(pred_copy, davis):
    frame = pred_copy / "cc-gap" / "00002.png"
    arr = np.array(Image.open(frame))
    arr[-2:, :4] = 255
    save_palette_png(arr, frame)
    with pytest.raises(ObjectIdError, match=r"255.*void"):
        de.evaluate_davis(pred_copy, davis["gt"], sequences=["cc-gap"], progress=False)


def test_object_in_empty_first_frame_sequence_is_rejected(pred_copy, davis):
    frame = pred_copy / "dd-empty" / "00001.png"
    save_palette_png(np.ones((20, 23), dtype=np.uint8), frame)
    with pytest.raises(ObjectIdError, match="no objects"):
        de.evaluate_davis(pred_copy, davis["gt"], sequences=["dd-empty"], progress=False)


def test_missing_prediction_frames(pred_copy, davis):
    (pred_copy / "bb-radius4" / "00003.png").unlink()
    (pred_copy / "bb-radius4" / "00007.png").unlink()
    with pytest.raises(InputError) as err:
        de.evaluate_davis(pred_copy, davis["gt"], progress=False)
    msg = str(err.value)
    assert "bb-radius4" in msg and "00003.png" in msg and "00007.png" in msg and "2 of 10" in msg


def test_first_and_last_prediction_frames_are_optional(davis):
    # the fixture writes no prediction for frame 0 and the last frame; that is complete
    assert not (davis["pred"] / "aa-odd" / "00000.png").exists()
    assert not (davis["pred"] / "aa-odd" / "00008.png").exists()


def test_missing_prediction_sequence(pred_copy, davis):
    shutil.rmtree(pred_copy / "cc-gap")
    with pytest.raises(InputError, match="cc-gap"):
        de.evaluate_davis(pred_copy, davis["gt"], progress=False)


def test_size_mismatch(pred_copy, davis):
    frame = pred_copy / "aa-odd" / "00002.png"
    save_palette_png(np.zeros((40, 57), dtype=np.uint8), frame)
    with pytest.raises(ShapeError) as err:
        de.evaluate_davis(pred_copy, davis["gt"], progress=False)
    msg = str(err.value)
    assert isinstance(err.value, S3rtError)
    assert "00002.png" in msg and "40x57" in msg and "41x57" in msg


def test_rgb_prediction_is_rejected(pred_copy, davis):
    frame = pred_copy / "aa-odd" / "00001.png"
    Image.open(frame).convert("RGB").save(frame)
    with pytest.raises(InputError, match="mode 'RGB'") as err:
        de.evaluate_davis(pred_copy, davis["gt"], progress=False)
    assert "00001.png" in str(err.value) and "palette" in str(err.value)


def test_unknown_sequence_and_bad_folders(davis, tmp_path):
    with pytest.raises(InputError, match="nope"):
        de.evaluate_davis(davis["pred"], davis["gt"], sequences=["aa-odd", "nope"], progress=False)
    with pytest.raises(InputError, match="does not exist"):
        de.evaluate_davis(tmp_path / "missing", davis["gt"], progress=False)
    with pytest.raises(InputError, match="does not exist"):
        de.evaluate_davis(davis["pred"], tmp_path / "missing", progress=False)


def test_too_short_sequence(tmp_path):
    gt = np.zeros((2, 10, 10), dtype=np.uint8)
    gt[:, 2:5, 2:5] = 1
    write_sequence(tmp_path / "gt", tmp_path / "pred", "short", gt, gt)
    (tmp_path / "pred" / "short").mkdir(parents=True, exist_ok=True)
    with pytest.raises(InputError, match="at least 3"):
        de.evaluate_davis(tmp_path / "pred", tmp_path / "gt", progress=False)


# ============================================================================================
# CLI
# ============================================================================================

def test_cli_eval_table_and_json(davis, tmp_path, capsys):
    out = tmp_path / "sub" / "jf.json"
    rc = main(["eval", "--pred", str(davis["pred"]), "--gt", str(davis["gt"]), "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0
    res = json.loads(out.read_text())
    assert_close_results(res, oracle_evaluate(davis["pred"], davis["gt"], SEQUENCES))
    assert "| J&F | J-Mean | J-Recall | J-Decay | F-Mean | F-Recall | F-Decay |" in captured.out
    assert f"| {res['J&F']:.4f} | {res['J']['mean']:.4f} |" in captured.out
    for seq in SEQUENCES:
        assert f"| {seq} |" in captured.out
    assert "| dd-empty | 0 | - | - | - |" in captured.out


def test_cli_eval_sequences_option(davis, tmp_path, capsys):
    out = tmp_path / "jf.json"
    rc = main(["eval", "--pred", str(davis["pred"]), "--gt", str(davis["gt"]),
               "--sequences", "aa-odd,cc-gap", "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0
    res = json.loads(out.read_text())
    assert list(res["sequences"]) == ["aa-odd", "cc-gap"]
    assert "bb-radius4" not in captured.out


def test_cli_eval_error_is_one_line(pred_copy, davis, capsys):
    (pred_copy / "aa-odd" / "00004.png").unlink()
    rc = main(["eval", "--pred", str(pred_copy), "--gt", str(davis["gt"])])
    err = capsys.readouterr().err
    assert rc == 1
    assert "s3rt eval: error:" in err and "00004.png" in err
    with pytest.raises(InputError):  # -v keeps the traceback
        main(["eval", "--pred", str(pred_copy), "--gt", str(davis["gt"]), "-v"])


def test_cli_eval_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--pred" in out and "--gt" in out and "--sequences" in out and "--json" in out
