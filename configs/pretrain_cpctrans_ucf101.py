"""CPCTrans (`cpc_transformer`) pretraining on UCF101 split 1, the best row of the seed
(`yliu1229/CPCTR`: 2D-ResNet-18 + Transformer at 224 px, fine-tuned UCF101 / HMDB51 top-1
63.5 / 34.6); kNN retrieval at the end.

The seed's recipe (`CPCTrans/main.py` and its README): 5 frames ("blocks" of one frame), every
3rd, the last 3 predicted ("5pred3"); 224 px crops, flipped, grey and colour-jittered frame by
frame as DPC; Adam lr 1e-3, weight decay 1e-5, lr x0.5 every 100 epochs, 300 epochs, batch 16:
9,537 videos / 16 = 596 steps an epoch, 178,800 steps, decays after 59,600 and 119,200. Its
Transformer has one layer, two heads, width 256 and a 2048-wide MLP: here `transformer_width`
256, `mlp_ratio` 8, onto which the zoo's 2D ResNet-18 (512 channels) is projected. How the
Transformer aggregates (prefix attention, no ConvGRU): `vssl_jax.objectives.dpc`.
Frames must have a short side of at least 224 px (convert with `--short-side 256`, as the seed's
frames); the kNN eval reads the same 5-frame clips.

Variants: (none) the recipe above, `demo`, `smoke` (`configs/ssl.py`): the demo's 64 px frames,
every 2nd frame, a Transformer of width 32.
"""

from __future__ import annotations

import ml_collections

from configs.ssl import PRETRAIN_VARIANTS, pretrain_config

VARIANTS = PRETRAIN_VARIANTS  # Every `arg` get_config takes.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, variant = pretrain_config(arg, "ucf101")
    config.model.name = "transformer_resnet18"
    config.model.transformer_width = 256
    config.model.transformer_depth = 1
    config.model.num_heads = 2
    config.model.mlp_ratio = 8.0
    config.objective = ml_collections.ConfigDict(
        {
            "name": "cpc_transformer",
            "num_seq": 5,
            "seq_len": 1,
            "pred_step": 3,
            "downsample": 3,
            "temperature": 1.0,
            "normalize": False,
            "grayscale_prob": 0.5,
            "color_jitter": (0.5, 0.5, 0.5, 0.25),
        }
    )
    config.optimizer.name = "adamw"
    config.optimizer.lr = 1e-3
    config.optimizer.weight_decay = 1e-5
    if variant == "ucf101":
        config.data.crop_size = 224
        config.optimizer.schedule = "step"
        config.optimizer.lr_steps = (59_600, 119_200)
        config.optimizer.lr_decay = 0.5
        config.optimizer.warmup_steps = 0
        config.batch_size = 16
        config.num_train_steps = 178_800
    else:
        config.model.transformer_width = 32
        config.objective.downsample = config.data.frame_stride
    config.data.num_frames = config.objective.num_seq * config.objective.seq_len
    config.data.frame_stride = config.objective.downsample
    config.lock()
    return config
