"""The subgraph I/O contract: names, dtypes and symbolic shapes of the six graphs (eight with
long-term memory: the readout then also reads [long-term | slots] and returns usage, plus
lt_consolidate and lt_prune; LONG_TERM_MEMORY.md §9.3).

Declared once, torch-free. The exporter derives ONNX names and dynamic axes from it, writes
it into manifest.json, and every backend checks what it loaded against it.

Symbols: N objects (the only dynamic axis besides NB), NB active memory buckets, Q queries,
H x W padded input, h x w = H/16 x W/16, P = h*w, S memory slots. Channel sizes come from the
model config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from s3rt.configs import InferenceConfig, ModelConfig

GRAPH_ORDER = ("encoder", "spatial_semantic", "memory_readout", "query_attention",
               "mask_decoder", "mask_encoder")

LONG_TERM_GRAPHS = ("lt_consolidate", "lt_prune")   # only in exports made with long-term memory on

DYNAMIC_AXES = ("N", "NB")   # objects, active buckets


def graph_names(inf: InferenceConfig | None) -> tuple[str, ...]:
    """The graphs an export with these settings has: the six, plus the long-term ones if on."""
    if inf is None or inf.long_term is None:
        return GRAPH_ORDER
    return GRAPH_ORDER + tuple(g for g in LONG_TERM_GRAPHS if g != "lt_prune" or inf.long_term.keep_after_prune > 0)


def _resolve(dim: int | str, dims: dict[str, int]) -> int:
    if isinstance(dim, int):
        return dim
    if dim.endswith("+1"):
        return dims[dim[:-2]] + 1
    return dims[dim]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str                       # numpy dtype name: float32, int64, bool
    shape: tuple[int | str, ...]     # ints are static, strings name a dynamic axis

    def concrete(self, **dims: int) -> tuple[int, ...]:
        return tuple(_resolve(d, dims) for d in self.shape)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}


@dataclass(frozen=True)
class Geometry:
    """Static sizes of one export: padded resolution and memory capacity."""

    height: int        # padded H (multiple of the config's pad_multiple: 32 S3, 16 Cutie)
    width: int         # padded W
    slots: int         # S

    @property
    def h(self) -> int:
        return self.height // 16

    @property
    def w(self) -> int:
        return self.width // 16

    @property
    def tokens(self) -> int:
        return self.h * self.w


def graph_specs(cfg: ModelConfig, geo: Geometry, inf: InferenceConfig | None = None) -> dict[str, GraphSpec]:
    """I/O of every subgraph for one model config and one export geometry."""
    inf = inf or InferenceConfig()
    H, W, h, w, P, S = geo.height, geo.width, geo.h, geo.w, geo.tokens, geo.slots
    f32 = "float32"
    C, Ck, Cv, Cs, Ce, Q = cfg.pixel_dim, cfg.key_dim, cfg.value_dim, cfg.sensory_dim, cfg.embed_dim, cfg.num_queries

    def t(name: str, *shape: int | str, dtype: str = f32) -> TensorSpec:
        return TensorSpec(name, dtype, tuple(shape))

    image = t("image", 1, 3, H, W)
    f16 = t("f16", 1, cfg.ms_dims[0], h, w)
    f8 = t("f8", 1, cfg.ms_dims[1], 2 * h, 2 * w)
    f4 = t("f4", 1, cfg.ms_dims[2], 4 * h, 4 * w)
    pix_feat = t("pix_feat", 1, C, h, w)
    key = t("key", 1, Ck, P)
    selection = t("selection", 1, Ck, P)
    shrinkage = t("shrinkage", 1, 1, P)
    sensory = t("sensory", 1, "N", Cs, h, w)
    new_sensory = t("new_sensory", 1, "N", Cs, h, w)

    if cfg.encoder == "vit_adapter":
        assert cfg.vit is not None
        tokens = tuple(t(f"vit_tokens_{i}", 1, 1 + P, cfg.vit.dim) for i in range(cfg.vit.interactions))
        encoder = GraphSpec("encoder", (image,), tokens)
        spatial = GraphSpec("spatial_semantic", (image, *tokens),
                            (f8, f4, pix_feat, key, shrinkage, selection))
    else:
        encoder = GraphSpec("encoder", (image,), (f16, f8, f4))
        spatial = GraphSpec("spatial_semantic", (f16,), (pix_feat, key, shrinkage, selection))

    readout_in = (key, selection,
                  t("mem_key", 1, Ck, S * P), t("mem_shrinkage", 1, 1, S * P), t("mem_value", "N", Cv, S * P),
                  t("bucket_valid", "NB", S, dtype="bool"), t("object_bucket", "N", dtype="int64"),
                  pix_feat, sensory, t("prev_prob", 1, "N", H, W))
    readout_out = (t("pixel_readout", 1, "N", C, h, w),)
    if inf.long_term is not None:     # readout over [long-term | slots], usage out (LONG_TERM_MEMORY §9.3)
        L = inf.long_term.max_num_tokens
        readout_in += (t("lt_key", "NB", Ck, L), t("lt_shrinkage", "NB", 1, L), t("lt_value", "N", Cv, L),
                       t("lt_valid", "NB", L, dtype="bool"))
        readout_out += (t("usage", "NB", L + S * P),)
    readout = GraphSpec("memory_readout", readout_in, readout_out)
    query = GraphSpec("query_attention",
                      (t("pixel_readout", 1, "N", C, h, w), t("object_memory", 1, "N", Q, Ce + 1)),
                      (t("readout", 1, "N", Ce, h, w),))
    decoder = GraphSpec("mask_decoder", (f8, f4, t("readout", 1, "N", Ce, h, w), sensory),
                        (t("probs", 1, "N+1", H, W), t("logits", 1, "N", H // 4, W // 4), new_sensory))
    mask_enc = GraphSpec("mask_encoder", (image, pix_feat, sensory, t("masks", 1, "N", H, W)),
                         (t("mask_value", 1, "N", Cv, h, w), new_sensory, t("summaries", 1, "N", Q, Ce + 1)))
    specs: tuple[GraphSpec, ...] = (encoder, spatial, readout, query, decoder, mask_enc)
    if inf.long_term is not None:
        specs += _long_term_specs(inf, geo, Ck, Cv)
    return {g.name: g for g in specs}


def _long_term_specs(inf: InferenceConfig, geo: Geometry, Ck: int, Cv: int) -> tuple[GraphSpec, ...]:
    """Consolidation and pruning graphs (LONG_TERM_MEMORY §9.3): static Nc, Pn, K = survivors."""
    lt = inf.long_term
    assert lt is not None
    P, S, L = geo.tokens, geo.slots, lt.max_num_tokens
    Nc, Pn, K = lt.candidates(P), lt.num_prototypes, lt.keep_after_prune

    def t(name: str, *shape: int | str, dtype: str = "float32") -> TensorSpec:
        return TensorSpec(name, dtype, tuple(shape))

    consolidate = GraphSpec(
        "lt_consolidate",
        (t("mem_key", 1, Ck, S * P), t("mem_shrinkage", 1, 1, S * P), t("mem_selection", 1, Ck, S * P),
         t("mem_value", "N", Cv, S * P), t("candidate_index", Nc, dtype="int64"),
         t("prototype_index", Pn, dtype="int64")),
        (t("proto_key", 1, Ck, Pn), t("proto_shrinkage", 1, 1, Pn), t("proto_value", "N", Cv, Pn)))
    if K == 0:
        return (consolidate,)
    prune = GraphSpec(
        "lt_prune",
        (t("lt_key", "NB", Ck, L), t("lt_shrinkage", "NB", 1, L), t("lt_value", "N", Cv, L),
         t("survivor_index", "NB", K, dtype="int64"), t("object_bucket", "N", dtype="int64")),
        (t("pruned_key", "NB", Ck, K), t("pruned_shrinkage", "NB", 1, K), t("pruned_value", "N", Cv, K)))
    return (consolidate, prune)
