"""Joint space-time ViT (ViViT model 1, VideoMAE's backbone): ViT-B with 2x16x16 tubelets on
16-frame clips of every 4th frame at 224 px (VideoMAE's input), learned position embeddings.

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`. On the demo's 64 px frames: width 64, 2 blocks of 4 heads, 2x8x8
tubelets (4 x 8 x 8 tokens for 8 frames).
The dataset variants train with AdamW at VideoMAE's fine-tuning rate, 1e-3 per 256 clips
(1.25e-4 at batch 32), weight decay 0.05: the supervised default, SGD at lr 0.1, is a CNN recipe.
"""

from __future__ import annotations

from configs.supervised import DATASETS, VARIANTS, supervised_config

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None):
    config = supervised_config(
        "vivit_joint",
        arg,
        num_frames=16,
        frame_stride=4,
        crop_size=224,
        model={
            "width": 768,
            "depth": 12,
            "num_heads": 12,
            "patch": 16,
            "tubelet_frames": 2,
            "image_size": 224,
            "num_frames": 16,
        },
        demo_model={
            "width": 64,
            "depth": 2,
            "num_heads": 4,
            "patch": 8,
            "tubelet_frames": 2,
            "image_size": 64,
            "num_frames": 8,
        },
    )
    if arg in DATASETS:
        with config.unlocked():
            config.optimizer.name = "adamw"
            config.optimizer.lr = 1e-3 * config.batch_size / 256
            config.optimizer.weight_decay = 0.05
    return config
