"""Model variants as frozen dataclasses (torch-free: the runtime reads them too).

Symbols used across s3rt (DESIGN.md): N objects, Q object queries, C channels, H x W padded
input (multiples of the config's pad_multiple: 32 for S3, 16 for Cutie), h x w = H/16 x W/16,
P = h*w tokens, S memory slots (one frame each).

Two model families share one module tree: S3 (the spec) and Cutie (CUTIE_DELTA.md), which differ
in the read-from-pixel layer of the object transformer, the pad divisor and the evaluation
defaults; all three are fields of ModelConfig, so no code branches on the family name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from s3rt.errors import ConfigError
from s3rt.long_term_config import LongTermConfig


@dataclass(frozen=True)
class ViTAdapterConfig:
    """ViT backbone + spatial-semantic adapter (spec section 4)."""

    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    patch: int = 16
    pos_grid: int = 37              # learned position grid side (37x37 + 1 class position)
    interactions: int = 4           # blocks run in `interactions` equal groups
    deform_heads: int = 12
    deform_points: int = 4
    cffn_dim: int = 192             # ConvFFN hidden width (dim * 0.25)
    extra_extractors: int = 2       # only after the last interaction
    spm_dims: tuple[int, int, int] = (64, 128, 256)   # stem/s1, s2, s3 widths


@dataclass(frozen=True)
class ResNet50Config:
    """torchvision-style ResNet truncated after layer3: bottleneck ResNet-50 (spec section 5) or,
    with block="basic" and expansion 1, the ResNet-18 of cutie-small (CUTIE_DELTA section 4)."""

    stem: int = 64
    widths: tuple[int, int, int] = (64, 128, 256)     # block widths of res2/layer2/layer3
    blocks: tuple[int, int, int] = (3, 4, 6)
    expansion: int = 4
    block: Literal["bottleneck", "basic"] = "bottleneck"


ResNetConfig = ResNet50Config     # the name says what it is for the ResNet-18 variant too


@dataclass(frozen=True)
class ModelConfig:
    """One S3 variant. Field names follow the spec; see ``build_model`` in s3rt.export."""

    name: str
    encoder: Literal["vit_adapter", "resnet50", "resnet18"]
    ms_dims: tuple[int, int, int]                 # channels of f16, f8, f4
    num_queries: int                              # Q (object summaries = queries)
    num_blocks: int                               # L object-transformer blocks
    vit: ViTAdapterConfig | None = None
    resnet: ResNet50Config | None = None
    pixel_dim: int = 256
    key_dim: int = 64
    value_dim: int = 256
    sensory_dim: int = 256
    embed_dim: int = 256
    num_heads: int = 8
    ffn_dim: int = 2048
    up_dims: tuple[int, int, int] = (256, 128, 128)
    mask_encoder_dims: tuple[int, int, int] = (64, 128, 256)   # ResNet-18 layer1..3
    mask_encoder_blocks: tuple[int, int, int] = (2, 2, 2)
    pe_scale: float = 32.0
    pe_temperature: float = 128.0
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # Cutie vs S3 (CUTIE_DELTA.md): the object transformer's read-from-pixel block, the pad divisor
    # of frames (delta 6.1) and whose evaluation defaults the model runs with (delta 6.2)
    read_from_pixel: Literal["dq_ca", "masked_mha"] = "dq_ca"
    pad_multiple: int = 32
    family: Literal["s3", "cutie"] = "s3"

    def __post_init__(self) -> None:
        if self.num_queries % 2:
            raise ConfigError(f"{self.name}: num_queries must be even (foreground/background halves)")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"{self.name}: embed_dim {self.embed_dim} not divisible by {self.num_heads} heads")
        if self.up_dims[0] != self.pixel_dim:
            raise ConfigError(f"{self.name}: up_dims[0] must equal pixel_dim")
        if (self.encoder == "vit_adapter") != (self.vit is not None):
            raise ConfigError(f"{self.name}: vit settings required iff encoder is vit_adapter")
        if self.encoder.startswith("resnet") and self.resnet is None:
            raise ConfigError(f"{self.name}: resnet settings required for encoder {self.encoder}")
        if self.pad_multiple % 16:
            raise ConfigError(f"{self.name}: pad_multiple must be a multiple of 16 (the stride of f16), "
                              f"got {self.pad_multiple}")

    @property
    def uses_fused_gather(self) -> bool:
        """Whether DQ_CA's fused gather kernel/plugin applies (S3's read-from-pixel layer only)."""
        return self.read_from_pixel == "dq_ca"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class InferenceConfig:
    """Settings of the streaming loop (spec section 11; defaults = the DAVIS reference run)."""

    mem_every: int = 5
    max_mem_frames: int = 5          # permanent first frame + (max_mem_frames - 1) FIFO frames
    top_k: int = 30
    stagger_updates: int = 5
    max_objects: int = 8
    max_buckets: int = 4             # distinct "first frames" (objects added on different frames)
    long_term: LongTermConfig | None = None   # None: FIFO working memory only (LONG_TERM_MEMORY.md)

    def __post_init__(self) -> None:
        for name in ("mem_every", "max_mem_frames", "top_k", "stagger_updates", "max_objects", "max_buckets"):
            if getattr(self, name) < 1:
                raise ConfigError(f"inference setting {name} must be >= 1, got {getattr(self, name)}")

    @property
    def work_frames(self) -> int:
        """Ring slots: FIFO frames, or with long-term memory the F_max working frames (spec §9.2)."""
        if self.long_term is not None:
            return self.long_term.work_frames_max
        return self.max_mem_frames - 1

    @property
    def memory_slots(self) -> int:
        """S: one permanent slot per bucket plus the shared ring."""
        return self.max_buckets + self.work_frames


S3_BASE = ModelConfig(
    name="s3-base", encoder="vit_adapter", ms_dims=(768, 768, 768), num_queries=8, num_blocks=5,
    vit=ViTAdapterConfig(),
)
S3_R50 = ModelConfig(
    name="s3-r50", encoder="resnet50", ms_dims=(1024, 512, 256), num_queries=16, num_blocks=3,
    resnet=ResNet50Config(),
)
TINY = ModelConfig(
    name="tiny", encoder="vit_adapter", ms_dims=(48, 48, 48), num_queries=4, num_blocks=2,
    vit=ViTAdapterConfig(dim=48, depth=4, heads=4, mlp_dim=96, pos_grid=6, deform_heads=4,
                         cffn_dim=12, spm_dims=(8, 16, 24)),
    pixel_dim=32, key_dim=16, value_dim=32, sensory_dim=32, embed_dim=32, num_heads=4, ffn_dim=64,
    up_dims=(32, 16, 16), mask_encoder_dims=(8, 16, 32), mask_encoder_blocks=(1, 1, 1),
)
# Cutie (CUTIE_DELTA.md section 1): cutie-base is s3-r50 with the masked multi-head cross-attention,
# cutie-small swaps the pixel encoder for a ResNet-18 (ms_dims 256/128/64)
_CUTIE = dict(read_from_pixel="masked_mha", pad_multiple=16, family="cutie")
CUTIE_BASE = ModelConfig(
    name="cutie-base", encoder="resnet50", ms_dims=(1024, 512, 256), num_queries=16, num_blocks=3,
    resnet=ResNet50Config(), **_CUTIE,
)
CUTIE_SMALL = ModelConfig(
    name="cutie-small", encoder="resnet18", ms_dims=(256, 128, 64), num_queries=16, num_blocks=3,
    resnet=ResNet50Config(widths=(64, 128, 256), blocks=(2, 2, 2), expansion=1, block="basic"), **_CUTIE,
)
TINY_CUTIE = ModelConfig(
    name="tiny-cutie", encoder="resnet18", ms_dims=(32, 16, 8), num_queries=4, num_blocks=2,
    resnet=ResNet50Config(stem=8, widths=(8, 16, 32), blocks=(1, 1, 1), expansion=1, block="basic"),
    pixel_dim=32, key_dim=16, value_dim=32, sensory_dim=32, embed_dim=32, num_heads=4, ffn_dim=64,
    up_dims=(32, 16, 16), mask_encoder_dims=(8, 16, 32), mask_encoder_blocks=(1, 1, 1), **_CUTIE,
)
TINY_R50 = ModelConfig(
    name="tiny-r50", encoder="resnet50", ms_dims=(64, 32, 16), num_queries=4, num_blocks=2,
    resnet=ResNet50Config(stem=8, widths=(4, 8, 16), blocks=(1, 1, 1)),
    pixel_dim=32, key_dim=16, value_dim=32, sensory_dim=32, embed_dim=32, num_heads=4, ffn_dim=64,
    up_dims=(32, 16, 16), mask_encoder_dims=(8, 16, 32), mask_encoder_blocks=(1, 1, 1),
)

CONFIGS: dict[str, ModelConfig] = {c.name: c for c in (S3_BASE, S3_R50, TINY, TINY_R50,
                                                       CUTIE_SMALL, CUTIE_BASE, TINY_CUTIE)}
AUTO = "auto"      # --config auto: detect the config from a checkpoint's keys and shapes
# Names of the reference repository's configs, accepted as aliases.
ALIASES = {"adapter_depthanybase": "s3-base", "base": "s3-r50"}


def get_config(name: str) -> ModelConfig:
    if name == AUTO:
        raise ConfigError("--config auto needs --weights: the config is detected from the checkpoint's keys")
    key = ALIASES.get(name, name)
    if key not in CONFIGS:
        raise ConfigError(f"unknown model config '{name}'; choose one of {', '.join(CONFIGS)}")
    return CONFIGS[key]


def list_configs() -> list[str]:
    return list(CONFIGS)

