"""MoCo v2 (`moco`) pretraining of R3D-18 on UCF101 split 1; kNN retrieval at the end.

MoCo v2's ImageNet recipe (SGD momentum 0.9, lr 0.03 per 256 clips, weight decay 1e-4, cosine
schedule, 200 epochs, temperature 0.2, key momentum 0.999, 2-layer MLP head to 128-d) on clips
of 16 frames, stride 2, 112 px (R3D-18's usual input). Batch 64: lr 0.0075; 200 epochs of
9,537 videos are 29,800 steps. The queue holds 4,096 keys: MoCo's 65,536 is more than the
9,536 keys of an epoch, so a video's own older keys would sit in the queue as negatives.
Variants: (none) the recipe above, `demo`, `smoke` (`configs/ssl.py`).
"""

from __future__ import annotations

import ml_collections

from configs.ssl import PRETRAIN_VARIANTS, pretrain_config

VARIANTS = PRETRAIN_VARIANTS  # Every `arg` get_config takes.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, variant = pretrain_config(arg, "ucf101")
    config.model.name = "r3d_18"
    config.objective = ml_collections.ConfigDict(
        {
            "name": "moco",
            "embedding_dim": 128,
            "head_layers": 2,
            "queue_size": 4096,
            "momentum": 0.999,
            "temperature": 0.2,
            "color_jitter": (0.4, 0.4, 0.4, 0.1),
            "jitter_prob": 0.8,
            "grayscale_prob": 0.2,
        }
    )
    if variant == "ucf101":
        config.data.num_frames = 16
        config.data.frame_stride = 2
        config.data.crop_size = 112
        config.optimizer.name = "sgd"
        config.optimizer.lr = 0.03 * 64 / 256
        config.optimizer.momentum = 0.9
        config.optimizer.weight_decay = 1e-4
        config.optimizer.schedule = "cosine"
        config.optimizer.warmup_steps = 0
        config.batch_size = 64
        config.num_train_steps = 29_800
    else:
        # The demo's 288 training videos (96 in smoke) give 288 keys an epoch: keep the queue
        # below that, as above.
        config.objective.queue_size = 64 if variant == "smoke" else 256
    config.lock()
    return config
