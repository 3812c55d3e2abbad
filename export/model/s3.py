"""The S3 model: weights only, one method per deployment subgraph (spec 2-10, DESIGN.md).

Symbols: B = 1, N objects, Q queries, H x W padded input (multiples of cfg.pad_multiple), h x w = H/16 x W/16,
P = h*w, S memory slots, NB active buckets. The per-video state lives in the runtime's
tracker, never here: every method is a pure function of its inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3rt.configs import ModelConfig
from s3rt.export.model.common import (GConv2d, GroupFusionBlock, GroupResBlock, InvFreqBuffer, SensoryUpdater,
                                      aggregate_logits, area_downsample, fold, fp32_island, gated_sensory_update,
                                      sinusoid_2d, unfold, upsample_groups)
from s3rt.export.model.memory import (consolidate_prototypes, prune_long_term, similarity, topk_readout,
                                      topk_readout_long_term)
from s3rt.export.model.object_transformer import ObjectTransformer
from s3rt.export.model.resnet import ResNet50Encoder, basic_layer


class KeyProjection(nn.Module):
    """key, shrinkage (>= 1) and selection (in (0,1)) from f16 (spec 6)."""

    def __init__(self, *, in_dim: int, pixel_dim: int, key_dim: int) -> None:
        super().__init__()
        self.pix_feat_proj = nn.Conv2d(in_dim, pixel_dim, kernel_size=1)
        self.key_proj = nn.Conv2d(pixel_dim, key_dim, kernel_size=3, padding=1)
        self.d_proj = nn.Conv2d(pixel_dim, 1, kernel_size=3, padding=1)
        self.e_proj = nn.Conv2d(pixel_dim, key_dim, kernel_size=3, padding=1)

    def forward(self, f16: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t = self.pix_feat_proj(f16)
        return self.key_proj(t), self.d_proj(t) ** 2 + 1, torch.sigmoid(self.e_proj(t))


class MaskEncoder(nn.Module):
    """ResNet-18-style mask encoder + group fusion + deep sensory update (spec 7.1)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d1, d2, d3 = cfg.mask_encoder_dims
        n1, n2, n3 = cfg.mask_encoder_blocks
        self.conv1 = nn.Conv2d(5, d1, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(d1)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = basic_layer(in_dim=d1, out_dim=d1, blocks=n1, stride=1)
        self.layer2 = basic_layer(in_dim=d1, out_dim=d2, blocks=n2, stride=2)
        self.layer3 = basic_layer(in_dim=d2, out_dim=d3, blocks=n3, stride=2)
        self.fuser = GroupFusionBlock(x_in=cfg.pixel_dim, g_in=d3, out_dim=cfg.value_dim)
        self.sensory_update = SensoryUpdater(in_dim=cfg.value_dim, sensory_dim=cfg.sensory_dim)

    def forward(self, image: Tensor, pix_feat: Tensor, sensory: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """image (B,3,H,W) normalised, pix_feat (B,C,h,w), sensory (B,N,Cs,h,w), masks (B,N,H,W)
        -> mask value (B,N,Cv,h,w), new sensory (B,N,Cs,h,w)."""
        b, n = masks.shape[:2]
        others = (masks.sum(dim=1, keepdim=True) - masks).clamp(0, 1)                  # (B, N, H, W)
        rgb = image.unsqueeze(1).expand(b, n, *image.shape[1:])                         # (B, N, 3, H, W)
        g = torch.cat([rgb, masks.unsqueeze(2), others.unsqueeze(2)], dim=2)            # (B, N, 5, H, W)
        g = F.relu(self.maxpool(self.bn1(self.conv1(fold(g)))))                         # (BN, d1, H/4, W/4)
        g = self.layer3(self.layer2(self.layer1(g)))                                    # (BN, d3, h, w)
        value = self.fuser(pix_feat, unfold(g, b, n))                                   # (B, N, Cv, h, w)
        return value, self.sensory_update(value, sensory)


class ObjectSummarizer(nn.Module):
    """Q weighted-pooled summaries per object: first Q/2 over the mask, last Q/2 outside (7.2)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, q = cfg.embed_dim, cfg.num_queries
        self.num_summaries = q
        self.pe_scale, self.pe_temperature = cfg.pe_scale, cfg.pe_temperature
        self.pos_enc = InvFreqBuffer(c, cfg.pe_temperature)
        self.input_proj = nn.Linear(cfg.value_dim, c)
        self.feature_pred = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, c))
        self.weights_pred = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, q))

    def forward(self, masks: Tensor, value: Tensor) -> Tensor:
        """masks (B,N,H,W) full-resolution probabilities, value (B,N,Cv,h,w) -> (B,N,Q,C+1)."""
        b, n, _, h, w = value.shape
        m = area_downsample(masks, masks.shape[-1] // w).unsqueeze(-1)                  # (B, N, h, w, 1)
        half = self.num_summaries // 2
        weight_mask = torch.cat([m.expand(b, n, h, w, half), (1 - m).expand(b, n, h, w, half)], dim=-1)
        v = self.input_proj(value.permute(0, 1, 3, 4, 2))                               # (B, N, h, w, C)
        c = v.shape[-1]
        v = v + sinusoid_2d(h, w, c, scale=self.pe_scale, temperature=self.pe_temperature, device=v.device)
        with fp32_island(v):
            v, weight_mask = v.float(), weight_mask.float()
            feature = self.feature_pred(v).flatten(2, 3)                                # (B, N, P, C)
            weights = (torch.sigmoid(self.weights_pred(v)) * weight_mask).flatten(2, 3) # (B, N, P, Q)
            sums = weights.transpose(-1, -2) @ feature                                  # (B, N, Q, C)
            area = weights.sum(dim=2).unsqueeze(-1)                                     # (B, N, Q, 1)
            return torch.cat([sums, area], dim=-1)


class PixelFuser(nn.Module):
    """Visual readout + sensory + last mask -> fused pixel memory (spec 8.3)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fuser = GroupFusionBlock(x_in=cfg.pixel_dim, g_in=cfg.value_dim, out_dim=cfg.embed_dim)
        self.sensory_compress = GConv2d(cfg.sensory_dim + 2, cfg.value_dim, kernel_size=1)

    def forward(self, pix_feat: Tensor, visual: Tensor, sensory: Tensor, prev_prob: Tensor) -> Tensor:
        """pix_feat (B,C,h,w), visual (B,N,Cv,h,w), sensory (B,N,Cs,h,w), prev_prob (B,N,H,W)."""
        h, w = sensory.shape[-2:]
        m = area_downsample(prev_prob, prev_prob.shape[-1] // w)                        # (B, N, h, w)
        others = (m.sum(dim=1, keepdim=True) - m).clamp(0, 1)
        compressed = self.sensory_compress(torch.cat([sensory, m.unsqueeze(2), others.unsqueeze(2)], dim=2))
        return self.fuser(pix_feat, visual + compressed)


class DecoderSensoryUpdate(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        u16, u8, u4 = cfg.up_dims
        self.g16_conv = GConv2d(u16, cfg.sensory_dim, kernel_size=1)
        self.g8_conv = GConv2d(u8, cfg.sensory_dim, kernel_size=1)
        self.g4_conv = GConv2d(u4 + 1, cfg.sensory_dim, kernel_size=1)
        self.transform = GConv2d(cfg.sensory_dim * 2, cfg.sensory_dim * 3, kernel_size=3, padding=1)
        self.sensory_dim = cfg.sensory_dim

    def forward(self, p16: Tensor, p8: Tensor, q4: Tensor, sensory: Tensor) -> Tensor:
        u = self.g16_conv(p16) + self.g8_conv(area_downsample(p8, 2)) + self.g4_conv(area_downsample(q4, 4))
        with fp32_island(u):
            u, sensory = u.float(), sensory.float()
            return gated_sensory_update(self.transform(torch.cat([u, sensory], dim=2)), sensory, self.sensory_dim)


class DecoderFeatureProcessor(nn.Module):
    def __init__(self, *, in_dims: tuple[int, int], out_dims: tuple[int, int]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(nn.Conv2d(i, o, kernel_size=1) for i, o in zip(in_dims, out_dims))


class UpsampleBlock(nn.Module):
    def __init__(self, *, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.out_conv = GroupResBlock(in_dim=in_dim, out_dim=out_dim)

    def forward(self, g: Tensor, skip: Tensor) -> Tensor:
        return self.out_conv(upsample_groups(g, 2) + skip.unsqueeze(1))


class MaskDecoder(nn.Module):
    """Two upsampling stages, a logit head and the optional sensory update (spec 10)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        u16, u8, u4 = cfg.up_dims
        self.sensory_update = DecoderSensoryUpdate(cfg)
        self.decoder_feat_proc = DecoderFeatureProcessor(in_dims=(cfg.ms_dims[1], cfg.ms_dims[2]), out_dims=(u16, u8))
        self.up_16_8 = UpsampleBlock(in_dim=u16, out_dim=u8)
        self.up_8_4 = UpsampleBlock(in_dim=u8, out_dim=u4)
        self.pred = nn.Conv2d(u4, 1, kernel_size=3, padding=1)

    def forward(self, f8: Tensor, f4: Tensor, p16: Tensor, sensory: Tensor) -> tuple[Tensor, Tensor]:
        """f8 (B,C8,2h,2w), f4 (B,C4,4h,4w), p16 (B,N,C,h,w), sensory -> logits (B,N,4h,4w), new sensory."""
        b, n = p16.shape[:2]
        g8 = self.decoder_feat_proc.transforms[0](f8)
        g4 = self.decoder_feat_proc.transforms[1](f4)
        p8 = self.up_16_8(p16, g8)                                                      # (B, N, u8, 2h, 2w)
        p4 = self.up_8_4(p8, g4)                                                        # (B, N, u4, 4h, 4w)
        logits = self.pred(F.relu(fold(p4)))                                            # (BN, 1, 4h, 4w)
        logits = unfold(logits, b, n).squeeze(2)                                        # (B, N, 4h, 4w)
        q4 = torch.cat([p4, logits.unsqueeze(2)], dim=2)
        return logits, self.sensory_update(p16, p8, q4, sensory)


class AuxComputer(nn.Module):
    """Training-only head; present so the reference state dict loads strictly."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.sensory_aux = nn.Module()
        self.sensory_aux.projection = GConv2d(cfg.sensory_dim, cfg.embed_dim + 1, kernel_size=1)


def probabilities_from_logits(logits: Tensor) -> Tensor:
    """Soft aggregation (10.3): logits (B,N,H/4,W/4) -> probabilities (B,N+1,H,W), background first."""
    with fp32_island(logits):
        log_odds = aggregate_logits(logits, dim=1)
        log_odds = F.interpolate(log_odds, scale_factor=4.0, mode="bilinear", align_corners=False)
        return torch.softmax(log_odds, dim=1)


class S3Model(nn.Module):
    """Weights of S3 and the six subgraph functions. Children in the reference's order."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.encoder == "vit_adapter":
            from s3rt.export.model.vit_adapter import ViTAdapterEncoder
            assert cfg.vit is not None
            self.pixel_encoder: nn.Module = ViTAdapterEncoder(cfg.vit)
        else:
            assert cfg.resnet is not None
            self.pixel_encoder = ResNet50Encoder(cfg.resnet)
        self.pix_feat_proj = nn.Conv2d(cfg.ms_dims[0], cfg.pixel_dim, kernel_size=1)
        self.key_proj = KeyProjection(in_dim=cfg.ms_dims[0], pixel_dim=cfg.pixel_dim, key_dim=cfg.key_dim)
        self.mask_encoder = MaskEncoder(cfg)
        self.mask_decoder = MaskDecoder(cfg)
        self.pixel_fuser = PixelFuser(cfg)
        self.object_transformer = ObjectTransformer(cfg)
        self.object_summarizer = ObjectSummarizer(cfg)
        self.aux_computer = AuxComputer(cfg)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

    # -- helpers -------------------------------------------------------------------------------
    def use_fused_query_gather(self, enabled: bool = True) -> None:
        """Route DQ_CA's gather through the s3rt::masked_query_gather custom op (fused CUDA kernel
        on CUDA tensors, reference elsewhere; exported as one custom ONNX node for the plugin).

        S3 only: Cutie's read-from-pixel layer is a standard masked attention with no gather."""
        if enabled and not self.cfg.uses_fused_gather:
            from s3rt.errors import ConfigError
            raise ConfigError(f"the fused DQ_CA kernel/plugin is for S3 configs only; {self.cfg.name} reads pixels "
                              "with a standard masked multi-head attention (exported as plain ONNX ops)")
        from s3rt.export.model.object_transformer import masked_query_gather
        fn = masked_query_gather
        if enabled:
            from s3rt.kernels.masked_query_attention.torch_op import masked_query_gather as fn  # noqa: F811
        for block in self.object_transformer.blocks:
            block.read_from_pixel.gather_fn = fn

    def normalize(self, image: Tensor) -> Tensor:
        return (image - self.pixel_mean) / self.pixel_std

    # -- subgraphs -----------------------------------------------------------------------------
    def encoder(self, image: Tensor, pos_embed: Tensor | None = None) -> tuple[Tensor, ...]:
        """image (1,3,H,W) in [0,1], padded -> ViT token maps (vit) or (f16, f8, f4) (ResNet)."""
        x = self.normalize(image)
        if self.cfg.encoder == "vit_adapter":
            return tuple(self.pixel_encoder.forward_tokens(x, pos_embed))
        return tuple(self.pixel_encoder(x))

    def spatial_semantic(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """Spatial-semantic features and the memory key of one frame.

        ViT: (image, vit_tokens_0..3) -> f8, f4, pix_feat (1,C,h,w), key (1,Ck,P), shrinkage (1,1,P),
        selection (1,Ck,P). ResNet: (f16,) -> pix_feat, key, shrinkage, selection (f8/f4 come
        straight from the encoder graph).
        """
        if self.cfg.encoder == "vit_adapter":
            image, *tokens = inputs
            f16, f8, f4 = self.pixel_encoder.forward_adapter(self.normalize(image), list(tokens))
            head: tuple[Tensor, ...] = (f8, f4)
        else:
            (f16,) = inputs
            head = ()
        pix_feat = self.pix_feat_proj(f16)
        key, shrinkage, selection = self.key_proj(f16)
        return (*head, pix_feat, key.flatten(2), shrinkage.flatten(2), selection.flatten(2))

    def memory_readout(self, key: Tensor, selection: Tensor, mem_key: Tensor, mem_shrinkage: Tensor,
                       mem_value: Tensor, bucket_valid: Tensor, object_bucket: Tensor, pix_feat: Tensor,
                       sensory: Tensor, prev_prob: Tensor, lt_key: Tensor | None = None,
                       lt_shrinkage: Tensor | None = None, lt_value: Tensor | None = None,
                       lt_valid: Tensor | None = None, *, top_k: int) -> Tensor | tuple[Tensor, Tensor]:
        """-> pixel_readout (1, N, C, h, w): visual readout fused with sensory and last mask.

        With the long-term inputs (lt_key (NB,Ck,L), lt_shrinkage (NB,1,L), lt_value (N,Cv,L),
        lt_valid (NB,L)) it reads over [long-term | slots] and also returns usage (NB, L + S*P).
        """
        h, w = pix_feat.shape[-2:]
        n = mem_value.shape[0]
        usage = None
        with fp32_island(key):
            sim = similarity(mem_key.float(), mem_shrinkage.float(), key.float(), selection.float())  # (1, S*P, P)
            if lt_key is None:
                visual = topk_readout(sim, mem_value.float(), bucket_valid, object_bucket, top_k)     # (N, Cv, P)
            else:
                lt_sim = similarity(lt_key.float(), lt_shrinkage.float(), key.float(), selection.float())  # (NB, L, P)
                visual, usage = topk_readout_long_term(sim, lt_sim, mem_value.float(), lt_value.float(),
                                                       bucket_valid, lt_valid, object_bucket, top_k)
        visual = visual.view(1, n, visual.shape[1], h, w)                               # (1, N, Cv, h, w)
        fused = self.pixel_fuser(pix_feat, visual, sensory, prev_prob)
        return fused if usage is None else (fused, usage)

    def query_attention(self, pixel_readout: Tensor, object_memory: Tensor) -> Tensor:
        """(1,N,C,h,w), (1,N,Q,C+1) -> readout (1,N,C,h,w)."""
        return self.object_transformer(pixel_readout, object_memory)

    def mask_decoder_graph(self, f8: Tensor, f4: Tensor, readout: Tensor, sensory: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> probs (1,N+1,H,W), logits (1,N,H/4,W/4), new_sensory (1,N,Cs,h,w)."""
        logits, new_sensory = self.mask_decoder(f8, f4, readout, sensory)
        return probabilities_from_logits(logits), logits, new_sensory

    def mask_encoder_graph(self, image: Tensor, pix_feat: Tensor, sensory: Tensor, masks: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor]:
        """-> mask_value (1,N,Cv,h,w), new_sensory (1,N,Cs,h,w), summaries (1,N,Q,C+1)."""
        value, new_sensory = self.mask_encoder(self.normalize(image), pix_feat, sensory, masks)
        return value, new_sensory, self.object_summarizer(masks, value)

    def lt_consolidate(self, mem_key: Tensor, mem_shrinkage: Tensor, mem_selection: Tensor, mem_value: Tensor,
                       candidate_index: Tensor, prototype_index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Long-term consolidation (LT spec §6.3) -> proto_key (1,Ck,Pn), proto_shrinkage, proto_value (N,Cv,Pn)."""
        with fp32_island(mem_key):
            return consolidate_prototypes(mem_key.float(), mem_shrinkage.float(), mem_selection.float(),
                                          mem_value.float(), candidate_index, prototype_index)

    def lt_prune(self, lt_key: Tensor, lt_shrinkage: Tensor, lt_value: Tensor, survivor_index: Tensor,
                 object_bucket: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Long-term pruning gather (LT spec §6.4) -> pruned_key (NB,Ck,K), pruned_shrinkage, pruned_value."""
        return prune_long_term(lt_key, lt_shrinkage, lt_value, survivor_index, object_bucket)


GRAPH_METHODS = {
    "encoder": "encoder",
    "spatial_semantic": "spatial_semantic",
    "memory_readout": "memory_readout",
    "query_attention": "query_attention",
    "mask_decoder": "mask_decoder_graph",
    "mask_encoder": "mask_encoder_graph",
    "lt_consolidate": "lt_consolidate",     # long-term exports only (LONG_TERM_MEMORY.md)
    "lt_prune": "lt_prune",
}


def run_graph(model: S3Model, graph: str, inputs: list[Tensor], *, top_k: int) -> tuple[Tensor, ...]:
    """Call the method behind one subgraph with inputs in contract order; always a tuple back."""
    method = getattr(model, GRAPH_METHODS[graph])
    out = method(*inputs, top_k=top_k) if graph == "memory_readout" else method(*inputs)
    return out if isinstance(out, tuple) else (out,)
