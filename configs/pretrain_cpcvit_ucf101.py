"""ViT-temporal CPC: `cpc_transformer` pretraining on UCF101 split 1 with a ViT-B/16 frame encoder
(`transformer_vit`) in place of CPCTrans's 2D ResNet-18; kNN retrieval at the end.

Every frame's 14 x 14 patch tokens (after the ViT's final norm, projected to the temporal
Transformer's width) are the dense map whose next blocks are predicted, as the ResNet's 7 x 7
map is in `configs/pretrain_cpctrans_ucf101.py`, whose recipe this follows where it can: 5 frames
("blocks" of one frame), every 3rd, the last 3 predicted ("5pred3"); 224 px crops, flipped, grey
and colour-jittered frame by frame as DPC; 300 epochs at batch 16 (178,800 steps); a temporal
Transformer of one block, two heads, width 256, MLP 2048 (`transformer_mlp_ratio` 8). No
published recipe trains this combination; the seed's Adam at lr 1e-3 is far above the rates a
ViT-B trains at, so the optimisation is DeiT's (Touvron et al. 2021): AdamW, lr 5e-4 x batch /
512 (1.6e-5 at batch 16), weight decay 0.05, 5 epochs of warm-up (2,980 steps), cosine decay,
stochastic depth 0.1 in the ViT (off in the demo variants).
Frames must have a short side of at least 224 px (convert with `--short-side 256`).

Variants: (none) the recipe above, `demo`, `smoke` (`configs/ssl.py`): the demo's 64 px frames,
every 2nd frame, a ViT of width 64, 4 blocks, 4 heads and 16 px patches (a 4 x 4 map per
frame), a temporal Transformer of width 32.
"""

from __future__ import annotations

import ml_collections

from configs.ssl import PRETRAIN_VARIANTS, pretrain_config

VARIANTS = PRETRAIN_VARIANTS  # Every `arg` get_config takes.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, variant = pretrain_config(arg, "ucf101")
    config.model.name = "transformer_vit"
    vit = {"width": 768, "depth": 12, "num_heads": 12, "patch": 16, "image_size": 224}
    if variant != "ucf101":
        vit = {"width": 64, "depth": 4, "num_heads": 4, "patch": 16, "image_size": 64}
    for key, value in vit.items():
        config.model[key] = value
    config.model.drop_path = 0.1 if variant == "ucf101" else 0.0
    config.model.transformer_width = 256
    config.model.transformer_depth = 1
    config.model.transformer_heads = 2
    config.model.transformer_mlp_ratio = 8.0
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
    if variant == "ucf101":
        config.data.crop_size = 224
        config.batch_size = 16
        config.optimizer.lr = 5e-4 * config.batch_size / 512
        config.optimizer.weight_decay = 0.05
        config.optimizer.schedule = "cosine"
        config.optimizer.warmup_steps = 2_980
        config.num_train_steps = 178_800
    else:
        config.optimizer.lr = 1e-3
        config.optimizer.weight_decay = 0.05
        config.model.transformer_width = 32
        config.objective.downsample = config.data.frame_stride
    config.data.num_frames = config.objective.num_seq * config.objective.seq_len
    config.data.frame_stride = config.objective.downsample
    config.lock()
    return config
