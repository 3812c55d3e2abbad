"""masked_query_gather (DQ_CA core): references, custom op, ONNX custom node, CUDA kernel, CMake build.

CPU tests (fast) pin the spec: numpy vs torch reference, the all-blocked-row rule, one object,
ties (first index), fp16, the custom op's CPU path, the ONNX export paths, and a numpy model of
the kernel's argmax-key scheme. The CUDA parity test (marker ``gpu``) is skipped without a GPU; the
CMake test needs nvcc and cmake on PATH (skip it with S3RT_SKIP_CUDA_BUILD=1).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from s3rt.kernels.masked_query_attention import reference as ref  # noqa: E402
from s3rt.kernels.masked_query_attention import torch_op  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
C = 256
HEADS = 8
GAP_TOL = 1e-5  # spec 15: index disagreements are accepted only where the top-2 gap is below this


def make_inputs(bn: int, p: int, q: int, *, c: int = C, seed: int = 0, fg_rate: float = 0.3,
                blocked_rows: bool = True):
    """Random float32 inputs; with blocked_rows, object 0 has no foreground, the last has only foreground."""
    rng = np.random.default_rng(seed)
    pixel = rng.standard_normal((bn, p, c)).astype(np.float32)
    query_key = rng.standard_normal((bn, q, c)).astype(np.float32)
    query_key /= np.linalg.norm(query_key, axis=-1, keepdims=True)
    foreground = rng.random((bn, p)) < fg_rate
    if blocked_rows and bn >= 2:
        foreground[0] = False
        foreground[-1] = True
    return pixel, query_key, foreground


def assert_matches_reference(gathered, index, pixel, query_key, foreground, num_heads, *,
                             atol: float, gap_tol: float = GAP_TOL):
    """Compare an implementation's outputs with the float64 numpy reference (rules of spec 15).

    Indices must be equal except where the reference's top-2 score gap is below gap_tol; there the
    chosen pixel must be allowed and score within gap_tol of the best. ``gathered`` must equal X^ at
    the chosen indices within atol. Returns the number of index disagreements.
    """
    pixel64 = np.asarray(pixel, dtype=np.float64)
    key64 = np.asarray(query_key, dtype=np.float64)
    scores = ref.masked_query_scores_numpy(pixel64, key64, foreground, num_heads)   # (BN, H, P, Q)
    ref_index = scores.argmax(axis=2)                                               # (BN, H, Q)
    gap = ref.top2_gap_numpy(scores)                                                # (BN, H, Q)
    index = np.asarray(index)
    assert index.shape == ref_index.shape
    differ = index != ref_index
    assert not np.any(differ & (gap >= gap_tol)), (
        f"{int(np.sum(differ & (gap >= gap_tol)))} index disagreements with top-2 gap >= {gap_tol}")
    if np.any(differ):  # near-ties: the chosen pixel must be allowed and (almost) as good
        chosen = np.take_along_axis(scores, index[:, :, None, :], axis=2)[:, :, 0, :]
        best = scores.max(axis=2)
        assert np.all(np.isfinite(chosen[differ])) and np.all(best[differ] - chosen[differ] <= gap_tol)
    bn, p, c = pixel64.shape
    d = c // num_heads
    x_hat = ref.normalize_numpy(pixel64).reshape(bn, p, num_heads, d).transpose(0, 2, 1, 3)  # (BN, H, P, D)
    expect = np.take_along_axis(x_hat, index[..., None], axis=2)                    # (BN, H, Q, D)
    expect = expect.transpose(0, 2, 1, 3).reshape(bn, -1, c)                         # (BN, Q, C)
    np.testing.assert_allclose(np.asarray(gathered, dtype=np.float64), expect, rtol=0, atol=atol)
    return int(np.sum(differ))


# ------------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bn,p,q,c,heads", [
    (3, 257, 16, 256, 8),   # real C/heads, fully blocked rows in objects 0 and 2
    (4, 100, 8, 256, 8),    # Q = 8
    (1, 64, 16, 256, 8),    # one object
    (2, 33, 6, 64, 4),      # generic sizes (the references are not tied to the kernel's C)
])
def test_numpy_and_torch_references_agree(bn, p, q, c, heads):
    pixel, query_key, foreground = make_inputs(bn, p, q, c=c, seed=bn * 1000 + p)
    g_np, i_np = ref.masked_query_gather_numpy(pixel, query_key, foreground, heads)
    g_t, i_t = ref.masked_query_gather_torch(torch.from_numpy(pixel), torch.from_numpy(query_key),
                                             torch.from_numpy(foreground), heads)
    assert g_np.shape == (bn, q, c) and g_np.dtype == np.float32
    assert i_np.shape == (bn, heads, q) and i_np.dtype == np.int64
    assert tuple(g_t.shape) == (bn, q, c) and g_t.dtype == torch.float32 and i_t.dtype == torch.int64
    assert_matches_reference(g_np, i_np, pixel, query_key, foreground, heads, atol=1e-6)
    assert_matches_reference(g_t.numpy(), i_t.numpy(), pixel, query_key, foreground, heads, atol=1e-6)


def test_float64_numpy_reference_stays_float64():
    pixel, query_key, foreground = make_inputs(2, 40, 8)
    gathered, index = ref.masked_query_gather_numpy(pixel.astype(np.float64), query_key.astype(np.float64),
                                                    foreground, HEADS)
    assert gathered.dtype == np.float64 and index.dtype == np.int64


def test_blocking_rule_and_fully_blocked_rows():
    """q < Q/2 reads foreground, q >= Q/2 background; an empty allowed set reads every pixel."""
    bn, p, q = 3, 120, 16
    pixel, query_key, foreground = make_inputs(bn, p, q, seed=7)   # object 0: no fg, object 2: all fg
    _, index = ref.masked_query_gather_numpy(pixel, query_key, foreground, HEADS)
    unmasked = ref.masked_query_scores_numpy(pixel, query_key, np.zeros((bn, p), bool), HEADS)
    # the all-background mask blocks the first half everywhere -> unblocked; second half reads all bg = all
    free_index = unmasked.argmax(axis=2)                                            # (BN, H, Q)
    np.testing.assert_array_equal(index[0], free_index[0])          # no foreground: every row reads all pixels
    np.testing.assert_array_equal(index[2], free_index[2])          # only foreground: likewise
    chosen_fg = np.take_along_axis(np.broadcast_to(foreground[1][None, :, None], (HEADS, p, q)),
                                   index[1][:, None, :], axis=1)[:, 0, :]           # (H, Q)
    assert chosen_fg[:, : q // 2].all() and not chosen_fg[:, q // 2:].any()
    blocked = ref.blocked_mask_numpy(foreground, q)
    assert not blocked[0].any() and not blocked[2].any()
    blocked_t = ref.blocked_mask_torch(torch.from_numpy(foreground), q)
    np.testing.assert_array_equal(blocked_t.numpy(), blocked)


def make_exact_tie_inputs(bn: int, p: int, q: int, *, seed: int = 3):
    """Inputs whose scores are exact in float32 whatever the summation order, with many exact ties.

    Pixels are +-1 vectors (norm 16, so X^ = +-1/16 exactly), four distinct vectors repeated along P,
    some scaled by 2 (same X^); K^ entries are +-1/16 (exactly unit norm). A head's score is then
    (integer in [-32, 32]) / 256, so every implementation gets bitwise-equal scores and the
    first-index rule alone decides. Returns (pixel, query_key, foreground, integer scores (BN, H, P, Q)).
    """
    rng = np.random.default_rng(seed)
    distinct = rng.choice([-1.0, 1.0], size=(bn, 4, C)).astype(np.float32)
    pixel = distinct[:, np.arange(p) % 4, :].copy()                  # every vector appears p/4 times
    pixel[:, 4::8, :] *= 2.0                                        # exact scaling: same X^
    signs = rng.choice([-1.0, 1.0], size=(bn, q, C)).astype(np.float32)
    query_key = signs / 16.0
    foreground = rng.random((bn, p)) < 0.5
    d = C // HEADS
    int_scores = np.einsum("bphd,bqhd->bhpq", np.sign(pixel).reshape(bn, p, HEADS, d).astype(np.int64),
                           signs.reshape(bn, q, HEADS, d).astype(np.int64))          # (BN, H, P, Q)
    return pixel, query_key, foreground, int_scores


def first_allowed_argmax(int_scores: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Brute force: for each (bn, h, q) the first allowed pixel with the maximal score -> (BN, H, Q)."""
    bn, h, p, q = int_scores.shape
    out = np.zeros((bn, h, q), np.int64)
    for b in range(bn):
        for qq in range(q):
            allowed = foreground[b] if qq < q // 2 else ~foreground[b]
            if not allowed.any():
                allowed = np.ones(p, bool)
            for hh in range(h):
                candidates = np.flatnonzero(allowed)
                best = int_scores[b, hh, candidates, qq].max()
                out[b, hh, qq] = candidates[int_scores[b, hh, candidates, qq] == best][0]
    return out


def test_ties_pick_the_first_index():
    """Exact ties (duplicated and scaled pixel vectors, quantised scores): the first allowed index wins."""
    bn, p, q = 2, 64, 8
    pixel, query_key, foreground, int_scores = make_exact_tie_inputs(bn, p, q)
    expect = first_allowed_argmax(int_scores, foreground)
    g_np, i_np = ref.masked_query_gather_numpy(pixel, query_key, foreground, HEADS)
    g_t, i_t = ref.masked_query_gather_torch(torch.from_numpy(pixel), torch.from_numpy(query_key),
                                             torch.from_numpy(foreground), HEADS)
    np.testing.assert_array_equal(i_np, expect)
    np.testing.assert_array_equal(i_t.numpy(), expect)
    assert np.all(np.abs(g_np) == np.float32(1 / 16)) and torch.equal(g_t, torch.from_numpy(g_np))
    # all-zero pixels: every score is +-0, both take the first allowed pixel, X^ = 0
    zeros = np.zeros((1, 10, C), np.float32)
    fg = np.array([[False, False, True] + [False] * 7])
    g0, i0 = ref.masked_query_gather_numpy(zeros, query_key[:1], fg, HEADS)
    g0t, i0t = ref.masked_query_gather_torch(torch.from_numpy(zeros), torch.from_numpy(query_key[:1]),
                                             torch.from_numpy(fg), HEADS)
    assert (i0[:, :, : q // 2] == 2).all() and (i0[:, :, q // 2:] == 0).all()
    np.testing.assert_array_equal(i0, i0t.numpy())
    assert not g0.any() and not g0t.any()


def test_fp16_input_on_the_torch_reference():
    pixel, query_key, foreground = make_inputs(3, 200, 16, seed=11)
    px16, qk16 = torch.from_numpy(pixel).half(), torch.from_numpy(query_key).half()
    fg = torch.from_numpy(foreground)
    gathered, index = ref.masked_query_gather_torch(px16, qk16, fg, HEADS)
    assert gathered.dtype == torch.float16 and index.dtype == torch.int64
    g32, i32 = ref.masked_query_gather_torch(px16.float(), qk16.float(), fg, HEADS)  # fp32 compute contract
    assert torch.equal(index, i32) and torch.equal(gathered, g32.half())
    assert_matches_reference(gathered.float().numpy(), index.numpy(), px16.float().numpy(),
                             qk16.float().numpy(), foreground, HEADS, atol=1e-3)


def test_reference_rejects_bad_shapes():
    from s3rt.errors import ShapeError

    pixel, query_key, foreground = make_inputs(2, 10, 8)
    with pytest.raises(ShapeError, match="query_key"):
        ref.masked_query_gather_numpy(pixel, query_key[:1], foreground, HEADS)
    with pytest.raises(ShapeError, match="foreground"):
        ref.masked_query_gather_torch(torch.from_numpy(pixel), torch.from_numpy(query_key),
                                      torch.from_numpy(foreground[:, :5]), HEADS)
    with pytest.raises(ShapeError, match="num_heads"):
        ref.masked_query_gather_numpy(pixel, query_key, foreground, 7)


def _kernel_key_model(raw_scores: np.ndarray, foreground: np.ndarray, splits: int) -> np.ndarray:
    """numpy model of masked_query_gather.cu's argmax: 64-bit keys, max per pixel split, then max.

    raw_scores (BN, H, P, Q) float32 unmasked -> index (BN, H, Q).
    """
    bn, h, p, q = raw_scores.shape
    s = np.where(raw_scores == 0, np.float32(0), raw_scores).astype(np.float32)     # -0 -> +0
    bits = s.view(np.uint32).astype(np.uint64)
    ordered = np.where(bits & 0x80000000, (~bits) & 0xFFFFFFFF, bits | 0x80000000)
    allowed = foreground[:, None, :, None] == (np.arange(q) < q // 2)[None, None, None, :]  # (BN, 1, P, Q)
    inv_p = (0x7FFFFFFF - np.arange(p, dtype=np.uint64))[None, None, :, None]
    keys = (allowed.astype(np.uint64) << np.uint64(63)) | (ordered << np.uint64(31)) | inv_p  # (BN, H, P, Q)
    bounds = np.linspace(0, p, splits + 1).astype(int)
    partial = [keys[:, :, a:b].max(axis=2) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    best = np.maximum.reduce(partial)                                               # (BN, H, Q)
    return (0x7FFFFFFF - (best & np.uint64(0x7FFFFFFF))).astype(np.int64)


@pytest.mark.parametrize("splits", [1, 3, 7])
def test_kernel_argmax_key_scheme_matches_reference(splits):
    """The kernel folds masking, the all-blocked rule and first-index ties into one max over keys."""
    bn, p, q = 3, 50, 8
    pixel, query_key, foreground = make_inputs(bn, p, q, seed=5)
    pixel[:, 20] = pixel[:, 3]                                       # exact ties
    raw = np.einsum("bhpd,bhqd->bhpq",
                    ref.normalize_numpy(pixel).reshape(bn, p, HEADS, -1).transpose(0, 2, 1, 3),
                    query_key.reshape(bn, q, HEADS, -1).transpose(0, 2, 1, 3)).astype(np.float32)  # (BN, H, P, Q)
    raw[:, :, 40:45, :] = -0.0                                      # signed zeros must tie with +0
    raw[:, :, 45:50, :] = 0.0
    masked = np.where(ref.blocked_mask_numpy(foreground, q)[:, None], -np.inf, raw)
    np.testing.assert_array_equal(_kernel_key_model(raw, foreground, splits), masked.argmax(axis=2))
    zero = np.zeros_like(raw)
    zero[:, :, ::2] = -0.0
    masked0 = np.where(ref.blocked_mask_numpy(foreground, q)[:, None], -np.inf, zero)
    np.testing.assert_array_equal(_kernel_key_model(zero, foreground, splits), masked0.argmax(axis=2))


# ------------------------------------------------------------------------------------------------
# custom op (CPU path) and ONNX
# ------------------------------------------------------------------------------------------------

def test_custom_op_cpu_path_equals_reference():
    pixel, query_key, foreground = (torch.from_numpy(a) for a in make_inputs(3, 90, 16, seed=2))
    gathered, index = torch.ops.s3rt.masked_query_gather(pixel, query_key, foreground, HEADS)
    g_ref, i_ref = ref.masked_query_gather_torch(pixel, query_key, foreground, HEADS)
    assert torch.equal(gathered, g_ref) and torch.equal(index, i_ref)
    g16, i16 = torch_op.masked_query_gather(pixel.half(), query_key.half(), foreground, HEADS)
    g16_ref, i16_ref = ref.masked_query_gather_torch(pixel.half(), query_key.half(), foreground, HEADS)
    assert g16.dtype == torch.float16 and torch.equal(g16, g16_ref) and torch.equal(i16, i16_ref)
    torch.library.opcheck(torch.ops.s3rt.masked_query_gather.default, (pixel, query_key, foreground, HEADS),
                          test_utils=("test_schema", "test_faketensor"))


def test_cuda_kernel_is_not_built_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: covered by the gpu test")
    assert torch_op.is_cuda_kernel_available() is False
    from s3rt.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="CPU-only|no CUDA device|disabled"):
        torch_op.load_cuda_extension()
    assert torch_op.kernel_supports(256, 8) and not torch_op.kernel_supports(128, 8)
    assert not torch_op.kernel_supports(256, 64)


class _CallsOp(torch.nn.Module):
    def forward(self, pixel, query_key, foreground):
        return torch.ops.s3rt.masked_query_gather(pixel, query_key, foreground, HEADS)


class _CallsReference(torch.nn.Module):
    def forward(self, pixel, query_key, foreground):
        return ref.masked_query_gather_torch(pixel, query_key, foreground, HEADS)


def _onnx_export(module, args, **kwargs):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    return torch.onnx.export(module.eval(), args, dynamo=True, verbose=False,
                             input_names=["pixel", "query_key", "foreground"],
                             output_names=["gathered", "index"], **kwargs).model_proto


def _export_args(bn=2, p=48, q=16):
    return tuple(torch.from_numpy(a) for a in make_inputs(bn, p, q, seed=9))


def test_onnx_custom_node_option_emits_s3rt_domain_node():
    import onnx

    model = _onnx_export(_CallsOp(), _export_args(),
                         custom_translation_table=torch_op.onnx_translation_table(),
                         dynamic_shapes={"pixel": {0: "BN", 1: "P"}, "query_key": {0: "BN"},
                                         "foreground": {0: "BN", 1: "P"}})
    custom = [n for n in model.graph.node if n.domain == torch_op.ONNX_DOMAIN]
    assert len(custom) == 1
    node = custom[0]
    assert node.op_type == "MaskedQueryGather" and len(node.input) == 3 and len(node.output) == 2
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"num_heads": HEADS, "plugin_namespace": b"s3rt", "plugin_version": b"1"}
    assert {(o.domain, o.version) for o in model.opset_import} >= {("s3rt", 1)}
    producers = {out: n for n in model.graph.node for out in n.output}
    fg_cast = producers[node.input[2]]
    assert fg_cast.op_type == "Cast" and fg_cast.input[0] == "foreground"
    assert onnx.helper.get_attribute_value(fg_cast.attribute[0]) == onnx.TensorProto.INT32
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert outputs["index"].elem_type == onnx.TensorProto.INT64
    assert [d.dim_param or d.dim_value for d in outputs["gathered"].shape.dim] == ["BN", 16, C]
    onnx.checker.check_model(model)


def test_onnx_default_export_is_standard_ops_and_matches_reference():
    ort = pytest.importorskip("onnxruntime")
    args = _export_args()
    model = _onnx_export(_CallsReference(), args,
                         dynamic_shapes={"pixel": {0: "BN", 1: "P"}, "query_key": {0: "BN"},
                                         "foreground": {0: "BN", 1: "P"}})
    assert {n.domain for n in model.graph.node} <= {""}
    assert {"ArgMax", "GatherElements", "Where"} <= {n.op_type for n in model.graph.node}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for inputs in (args, make_inputs(3, 30, 16, seed=21)):                # export size, then other BN and P
        arrays = [np.asarray(a) for a in inputs]
        gathered, index = session.run(["gathered", "index"],
                                      dict(zip(["pixel", "query_key", "foreground"], arrays)))
        assert_matches_reference(gathered, index, *arrays, HEADS, atol=1e-6)
    # a model that calls the op exports to the same standard ops once decomposed into the reference
    exported = torch_op.decompose_to_reference(torch.export.export(_CallsOp(), args))
    model_op = torch.onnx.export(exported, args, dynamo=True, verbose=False).model_proto
    assert {n.domain for n in model_op.graph.node} <= {""}


def test_onnx_custom_node_with_the_torchscript_exporter():
    import io
    import warnings

    onnx = pytest.importorskip("onnx")
    torch_op.register_onnx_symbolic(17)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces its deprecation
        torch.onnx.export(_CallsOp(), _export_args(), buffer, dynamo=False, opset_version=17,
                          custom_opsets={"s3rt": 1})
    model = onnx.load_from_string(buffer.getvalue())
    assert [n.op_type for n in model.graph.node if n.domain == "s3rt"] == ["MaskedQueryGather"]


# ------------------------------------------------------------------------------------------------
# CUDA kernel vs reference (needs a GPU)
# ------------------------------------------------------------------------------------------------

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="no CUDA device: fused-kernel parity needs a GPU")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("bn,p,q,heads", [
    (1, 1620, 16, 8),    # 480p, one object
    (4, 8160, 16, 8),    # 1080p, objects 0 and 3 fully blocked
    (3, 37, 8, 8),       # tiny P, Q = 8
    (2, 300, 24, 8),     # two query chunks
    (2, 300, 16, 1), (2, 300, 16, 4), (2, 300, 16, 32),
])
def test_cuda_kernel_matches_reference(bn, p, q, heads, dtype):
    """fp32: indices identical except where the reference's top-2 gap < 1e-5, outputs within 1e-6.
    fp16 inputs (fp32 accumulation): same index rule, outputs within one half ulp (1e-3)."""
    ext = torch_op.load_cuda_extension()  # a build failure on a GPU machine is a failure, not a skip
    pixel, query_key, foreground = make_inputs(bn, p, q, seed=p + q + heads)
    dev = torch.device("cuda")
    px = torch.from_numpy(pixel).to(dev, dtype)
    qk = torch.from_numpy(query_key).to(dev, dtype)
    fg = torch.from_numpy(foreground).to(dev)
    gathered, index = ext.masked_query_gather(px, qk, fg, heads)
    assert gathered.dtype == dtype and index.dtype == torch.int64
    atol = 1e-6 if dtype == torch.float32 else 1e-3
    n_disagree = assert_matches_reference(gathered.float().cpu().numpy(), index.cpu().numpy(),
                                           px.float().cpu().numpy(), qk.float().cpu().numpy(), foreground,
                                           heads, atol=atol)
    assert n_disagree <= max(1, index.numel() // 100)  # only near-ties may disagree, and rarely
    g_op, i_op = torch.ops.s3rt.masked_query_gather(px, qk, fg, heads)   # dispatch reaches the kernel
    assert torch.equal(g_op, gathered) and torch.equal(i_op, index)


@pytest.mark.gpu
@requires_cuda
def test_cuda_kernel_ties_zeros_and_misaligned_inputs():
    ext = torch_op.load_cuda_extension()
    bn, p, q = 3, 200, 16
    pixel, query_key, foreground, int_scores = make_exact_tie_inputs(bn, p, q, seed=4)
    pixel[2] = 0.0                                                     # all scores +-0 for object 2
    int_scores[2] = 0
    expect = first_allowed_argmax(int_scores, foreground)
    g_ref, _ = ref.masked_query_gather_numpy(pixel, query_key, foreground, HEADS)
    dev = torch.device("cuda")
    for dtype in (torch.float32, torch.float16):                       # both exact in fp16 too
        qk = torch.from_numpy(query_key).to(dev, dtype)
        gathered, index = ext.masked_query_gather(torch.from_numpy(pixel).to(dev, dtype), qk,
                                                  torch.from_numpy(foreground).to(dev), HEADS)
        np.testing.assert_array_equal(index.cpu().numpy(), expect)     # exact ties: first index
        np.testing.assert_array_equal(gathered.float().cpu().numpy(), g_ref)
    # a view starting 4 bytes into its storage: the binding copies it to an aligned buffer
    px32 = torch.from_numpy(pixel).to(dev)
    gathered, index = ext.masked_query_gather(px32, torch.from_numpy(query_key).to(dev),
                                              torch.from_numpy(foreground).to(dev), HEADS)
    flat = torch.cat([torch.zeros(1, device=dev), px32.flatten()])
    shifted = flat[1:].view(bn, p, C)
    assert shifted.data_ptr() % 16 != 0
    g2, i2 = ext.masked_query_gather(shifted, torch.from_numpy(query_key).to(dev),
                                     torch.from_numpy(foreground).to(dev), HEADS)
    assert torch.equal(i2, index) and torch.equal(g2, gathered)


# ------------------------------------------------------------------------------------------------
# CMake build: sm_87 + sm_90 code in libs3rt_kernels.so
# ------------------------------------------------------------------------------------------------

def fatbin_architectures(path: Path) -> dict[str, set[int]]:
    """Architectures embedded in a CUDA fat binary: {"elf": {87, 90}, "ptx": {...}}.

    Reads the fatbin container (magic 0xBA55ED50; entry kind 1 = PTX, 2 = ELF/SASS; the target
    architecture is the 32-bit word at byte 28 of each entry header), for machines without cuobjdump.
    """
    data = path.read_bytes()
    found: dict[str, set[int]] = {"elf": set(), "ptx": set()}
    magic = struct.pack("<I", 0xBA55ED50)
    start = data.find(magic)
    while start != -1:
        _, version, header_size, fat_size = struct.unpack_from("<IHHQ", data, start)
        end = start + header_size + fat_size
        if version == 1 and header_size == 16 and end <= len(data):
            entry = start + header_size
            while entry + 32 <= end:
                kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
                arch = struct.unpack_from("<I", data, entry + 28)[0]
                if kind in (1, 2):
                    found["ptx" if kind == 1 else "elf"].add(arch)
                if entry_header == 0:
                    break
                entry += entry_header + payload
            start = data.find(magic, max(end, start + 4))
        else:
            start = data.find(magic, start + 4)
    return found


def _cuobjdump_elf_architectures(path: Path) -> set[int] | None:
    tool = shutil.which("cuobjdump")
    if tool is None:
        return None
    listing = subprocess.run([tool, "--list-elf", str(path)], capture_output=True, text=True, check=True).stdout
    return {int(tok[3:]) for line in listing.splitlines() for tok in line.replace(".", " ").split()
            if tok.startswith("sm_") and tok[3:].isdigit()}


@pytest.mark.skipif(os.environ.get("S3RT_SKIP_CUDA_BUILD") == "1", reason="S3RT_SKIP_CUDA_BUILD=1")
@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("cmake") is None,
                    reason="needs nvcc and cmake on PATH")
def test_cmake_builds_sm87_and_sm90(tmp_path):
    build = tmp_path / "build"
    configure = subprocess.run(["cmake", "-S", str(REPO), "-B", str(build)], capture_output=True, text=True)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    compiled = subprocess.run(["cmake", "--build", str(build), "--parallel"], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    library = build / "libs3rt_kernels.so"
    assert library.is_file()
    archs = fatbin_architectures(library)
    assert {87, 90} <= archs["elf"], archs
    from_cuobjdump = _cuobjdump_elf_architectures(library)
    if from_cuobjdump is not None:
        assert {87, 90} <= from_cuobjdump
    if not (build / "libs3rt_trt_plugins.so").exists():
        assert "skipping plugin" in configure.stdout


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake on PATH")
def test_cmake_configures_without_nvcc(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CUDACXX", "CUDA_PATH", "CUDAToolkit_ROOT")}
    env["PATH"] = os.pathsep.join(d for d in ("/usr/bin", "/bin") if Path(d).is_dir())
    if shutil.which("nvcc", path=env["PATH"]) is not None:
        pytest.skip("nvcc is in the system path: cannot hide it")
    cmake = shutil.which("cmake")
    result = subprocess.run([cmake, "-S", str(REPO), "-B", str(tmp_path / "b")], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    if "CUDA compiler - NOTFOUND" not in result.stdout:
        pytest.skip("this cmake finds nvcc outside PATH: cannot hide it")
    assert "nvcc not found: skipping" in result.stdout
