"""ViViT factorised encoder (ViViT model 2): ViViT-B/16x2 FE, a 12-layer spatial ViT-B over each
pair of frames and a 4-layer temporal transformer over their class tokens, on 32-frame clips of
every 2nd frame at 224 px (scenic's Kinetics config), learned position embeddings.

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`. On the demo's 64 px frames: width 64, 2 spatial and 1 temporal blocks
of 4 heads, 2x8x8 tubelets (4 temporal indices of 8 x 8 tokens for 8 frames).
The dataset variants train as scenic's `vivit_base_factorised_encoder`: SGD with momentum 0.9,
lr 0.05 per 64 clips, gradients clipped to norm 1, no weight decay (scenic starts the spatial
transformer from an ImageNet-21k ViT; from scratch, expect far lower accuracy). Parameters are
laid out by `sharding.TRANSFORMER_FSDP`, which splits them once `--config.mesh.fsdp` > 1.
"""

from __future__ import annotations

from configs.supervised import DATASETS, VARIANTS, supervised_config
from vssl_jax import sharding

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None):
    config = supervised_config(
        "vivit_factorised",
        arg,
        num_frames=32,
        frame_stride=2,
        crop_size=224,
        model={
            "width": 768,
            "depth": 12,
            "temporal_depth": 4,
            "num_heads": 12,
            "patch": 16,
            "tubelet_frames": 2,
            "image_size": 224,
            "num_frames": 32,
        },
        demo_model={
            "width": 64,
            "depth": 2,
            "temporal_depth": 1,
            "num_heads": 4,
            "patch": 8,
            "tubelet_frames": 2,
            "image_size": 64,
            "num_frames": 8,
        },
    )
    with config.unlocked():
        config.sharding_rules = sharding.TRANSFORMER_FSDP
        if arg in DATASETS:
            config.optimizer.lr = 0.05 * config.batch_size / 64
            config.optimizer.grad_clip_norm = 1.0
            config.optimizer.weight_decay = 0.0
    return config
