"""Arrow-of-time (`arrow_of_time`, Wei et al. 2018) pretraining of R3D-18 on UCF101 split 1;
kNN retrieval at the end.

Wei et al. classify optical-flow stacks with a VGG-16; their recipe does not carry over to an RGB
3D CNN, so the UCF101 variant trains R3D-18 on its usual clips (16 frames, stride 2, 112 px,
flipped: a mirror image keeps the direction of time) with this repository's SGD recipe for
pretext tasks: momentum 0.9, lr 0.05 at batch 32, weight decay 1e-4, cosine schedule after 500
warm-up steps, 30,000 steps (about 100 epochs of 9,537 videos).
Variants: (none) the recipe above, `demo`, `smoke` (`configs/ssl.py`).

On the default demo dataset the direction accuracy stays at chance by construction: every class
played backward is another class (move_left <-> move_right, up <-> down, the two rotations), so
no clip shows which way time runs. The demo's accelerating videos give time a direction
(`--config.data.demo.motion=accelerating`: a clip played backward slows down, which no video
does), and there the task can be learnt.
"""

from __future__ import annotations

import ml_collections

from configs.ssl import PRETRAIN_VARIANTS, pretrain_config

VARIANTS = PRETRAIN_VARIANTS  # Every `arg` get_config takes.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, variant = pretrain_config(arg, "ucf101")
    config.model.name = "r3d_18"
    config.objective = ml_collections.ConfigDict({"name": "arrow_of_time"})
    if variant == "ucf101":
        config.data.num_frames = 16
        config.data.frame_stride = 2
        config.data.crop_size = 112
        config.optimizer.name = "sgd"
        config.optimizer.lr = 0.05
        config.optimizer.momentum = 0.9
        config.optimizer.weight_decay = 1e-4
        config.optimizer.schedule = "cosine"
        config.optimizer.warmup_steps = 500
        config.batch_size = 32
        config.num_train_steps = 30_000
    config.lock()
    return config
