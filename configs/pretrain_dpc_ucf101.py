"""DPC (`dpc`) pretraining on UCF101 split 1, the paper's UCF101-only row (2D3D-ResNet-18,
128 px; fine-tuned UCF101 top-1 60.6); kNN retrieval at the end.

DPC's recipe (Han, Xie & Zisserman 2019; `TengdaHan/DPC` `dpc/main.py`): 8 blocks of 5 frames,
every 3rd frame of the 25 fps video, the last 3 blocks predicted; 128 px crops, flipped, grey
and colour-jittered frame by frame (`vssl_jax.objectives.dpc`); Adam, lr 1e-3 held constant,
weight decay 1e-5. Batch 128, as the README's ResNet-18 command at 128 px; the paper does not
give its UCF101-only schedule, so 300 epochs as that command: 9,537 videos / 128 = 74 steps an
epoch, 22,200 steps. optax's `adamw` decays weights decoupled from the gradient where DPC's Adam
adds the decay to it; at 1e-5 either is negligible.

The encoder is the zoo's `resnet3d_18` (Hara et al.'s 3D-ResNet-18, the code DPC's backbone
modifies) with 1x3x3 convolutions in stages 1-2: DPC's "2D3D" layout, whose last map at 128 px
is 4x4 as DPC's. DPC's own also has a 1x7x7 stem that keeps time and 256 channels in stage 4
(here 7x7x7 with a max-pool that halves time, and 512 channels).
The kNN eval, and the fine-tuning derived from this file, read 16-frame clips of every 3rd frame.

Variants: (none) the recipe above, `demo`, `smoke` (`configs/ssl.py`): the demo's 64 px frames,
4 blocks of 2 frames, every 2nd frame, 2 blocks predicted (the demo's 8-frame clips, in blocks).
"""

from __future__ import annotations

import ml_collections

from configs.ssl import PRETRAIN_VARIANTS, pretrain_config

VARIANTS = PRETRAIN_VARIANTS  # Every `arg` get_config takes.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, variant = pretrain_config(arg, "ucf101")
    config.model.name = "resnet3d_18"
    config.model.convs = ("2d", "2d", "3d", "3d")
    config.objective = ml_collections.ConfigDict(
        {
            "name": "dpc",
            "num_seq": 8,
            "seq_len": 5,
            "pred_step": 3,
            "downsample": 3,
            "temperature": 1.0,
            "normalize": False,
            "grayscale_prob": 0.5,
            "color_jitter": (0.5, 0.5, 0.5, 0.25),
            "gru_dropout": 0.1,
        }
    )
    config.optimizer.name = "adamw"
    config.optimizer.lr = 1e-3
    config.optimizer.weight_decay = 1e-5
    if variant == "ucf101":
        config.data.num_frames = 16
        config.data.frame_stride = 3
        config.data.crop_size = 128
        config.optimizer.schedule = "constant"
        config.optimizer.warmup_steps = 0
        config.batch_size = 128
        config.num_train_steps = 22_200
    else:
        config.objective.num_seq = 4
        config.objective.seq_len = 2
        config.objective.pred_step = 2
        config.objective.downsample = config.data.frame_stride
    config.lock()
    return config
