"""Long-term memory settings (spec LONG_TERM_MEMORY.md §2, §8), torch-free.

Cutie/S3 consolidate old working-memory frames into a fixed number of prototypes chosen by
usage, and prune the long-term store by usage when it is full. These settings say how large
everything may grow; `check_tokens` validates them once the tokens per frame (HW) are known.

Tie rule (spec §9.5), used everywhere s3rt picks "the top k by usage" (prototype choice,
pruning survivors): **stable descending order, the lower index wins among equal values**.
Indices are the reference order: candidates oldest frame first, row-major within a frame;
long-term tokens in their stored (compacted) order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from s3rt.errors import ConfigError


@dataclass(frozen=True)
class LongTermConfig:
    """The reference's `long_term` block. Frame counts include the permanent first frame."""

    max_mem_frames: int = 10       # working memory consolidates when it holds max-1 non-permanent frames
    min_mem_frames: int = 5        # ... keeping the newest min-1 of them
    num_prototypes: int = 128      # P_n prototypes per consolidation
    max_num_tokens: int = 10000    # L_max long-term tokens per bucket
    buffer_tokens: int = 2000      # pruning keeps L_max - P_n - buffer tokens
    count_usage: bool = True       # False is the reference's crash (spec §11 B1): rejected

    def __post_init__(self) -> None:
        if not self.count_usage:
            raise ConfigError("long-term memory needs count_usage=True: pruning keeps the most used tokens, and "
                              "without usage counts the reference crashes at the first pruning (spec §11 B1); "
                              "s3rt has no fallback")
        if self.min_mem_frames < 1:
            raise ConfigError(f"lt-min-mem-frames must be >= 1 (it counts the permanent frame), got {self.min_mem_frames}")
        if self.max_mem_frames <= self.min_mem_frames:
            raise ConfigError(f"lt-max-mem-frames ({self.max_mem_frames}) must be larger than lt-min-mem-frames "
                              f"({self.min_mem_frames}): consolidation moves the frames in between")
        if self.num_prototypes < 1:
            raise ConfigError(f"lt-prototypes must be >= 1, got {self.num_prototypes}")
        if self.buffer_tokens < 0:
            raise ConfigError(f"lt-buffer-tokens must be >= 0, got {self.buffer_tokens}")
        if self.keep_after_prune < 0:
            raise ConfigError(f"lt-max-tokens ({self.max_num_tokens}) must be at least lt-prototypes + "
                              f"lt-buffer-tokens ({self.num_prototypes} + {self.buffer_tokens}): pruning keeps "
                              "max - prototypes - buffer tokens")

    @property
    def work_frames_max(self) -> int:
        """F_max: non-permanent frames that trigger a consolidation."""
        return self.max_mem_frames - 1

    @property
    def work_frames_min(self) -> int:
        """F_min: non-permanent frames kept after a consolidation."""
        return self.min_mem_frames - 1

    @property
    def consolidated_frames(self) -> int:
        """Frames consolidated at once (the two -1 cancel, spec §6.2)."""
        return self.max_mem_frames - self.min_mem_frames

    @property
    def keep_after_prune(self) -> int:
        """Long-term tokens that survive a pruning (0 is legal: pruning then empties the store)."""
        return self.max_num_tokens - self.num_prototypes - self.buffer_tokens

    def candidates(self, tokens: int) -> int:
        """N_c = consolidated frames x HW."""
        return self.consolidated_frames * tokens

    def check_tokens(self, tokens: int, top_k: int) -> None:
        """The conditions that depend on HW (tokens per frame), spec §2."""
        if self.candidates(tokens) < self.num_prototypes:
            raise ConfigError(f"lt-prototypes ({self.num_prototypes}) larger than the candidates of a consolidation: "
                              f"({self.max_mem_frames} - {self.min_mem_frames}) frames x {tokens} tokens = "
                              f"{self.candidates(tokens)}; use fewer prototypes or a wider frame range")
        if tokens < top_k:
            raise ConfigError(f"top_k ({top_k}) larger than the tokens of one frame ({tokens}): the first readout "
                              "sees only the permanent frame; use a smaller top_k or larger frames")

    def to_dict(self) -> dict:
        return asdict(self)


# spec §8.1 (Cutie eval_config.yaml long_term block; LVOS runs mem_every 5)
CUTIE = LongTermConfig(max_mem_frames=10, min_mem_frames=5, num_prototypes=128, max_num_tokens=10000,
                       buffer_tokens=2000)
# spec §8.2 (S3 committed eval_config.yaml; mem_every 10, 720p, flip)
S3 = LongTermConfig(max_mem_frames=25, min_mem_frames=15, num_prototypes=128, max_num_tokens=30000,
                    buffer_tokens=3000)
# spec §8.3 (small limits: consolidation every 2 memory frames, pruning at 64 -> 32 tokens)
SMALL = LongTermConfig(max_mem_frames=4, min_mem_frames=2, num_prototypes=16, max_num_tokens=80, buffer_tokens=32)

PRESETS: dict[str, LongTermConfig] = {"cutie": CUTIE, "s3": S3, "small": SMALL}
# mem_every that goes with each preset in the reference configs
PRESET_MEM_EVERY = {"cutie": 5, "s3": 10, "small": 1}


def long_term_from(preset: str | None = None, **overrides: int | bool | None) -> LongTermConfig:
    """A preset (default cutie) with individual fields replaced (None = keep the preset's)."""
    name = preset or "cutie"
    if name not in PRESETS:
        raise ConfigError(f"unknown long-term preset '{name}'; choose one of {', '.join(PRESETS)}")
    values = PRESETS[name].to_dict()
    values.update({k: v for k, v in overrides.items() if v is not None})
    return LongTermConfig(**values)
