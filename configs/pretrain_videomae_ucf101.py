"""VideoMAE (`videomae`) pretraining of a ViT-B/16 (`vivit_joint`, 2x16x16 tubelets) on UCF101
split 1, VideoMAE's UCF101-only row (fine-tuned UCF101 top-1 91.3); kNN retrieval at the end.

VideoMAE's UCF101 recipe (`MCG-NJU/VideoMAE`, `scripts/ucf101/videomae_vit_base_patch16_224_
tubemasking_ratio_0.75_epoch_3200/pretrain.sh` with `run_mae_pretraining.py`'s defaults): 16
frames, every 4th, 224 px; tube masking at ratio 0.75 (0.9 on Kinetics and SSv2); decoder of 4
blocks, width 384, 6 heads; per-tubelet normalised targets; sinusoidal position tables; no drop
path; AdamW, weight decay 0.05, base lr 3e-4 per 256 clips at batch 24 x 8 GPUs = 192, i.e.
2.25e-4, cosine schedule after 40 warm-up epochs, 3,201 epochs; ImageNet mean and std. 9,537
videos / 192 = 49 steps an epoch: 156,849 steps, 1,960 of warm-up.
Deviations: AdamW's betas are optax's (0.9, 0.999), not VideoMAE's (0.9, 0.95) (the
optimizer config has no betas); the cosine ends at 0, not min_lr 7.5e-6 (scaled 1e-5), and
warm-up starts at 0, not 7.5e-7; the clips are random 224 px crops of frames stored at a short
side of 224+ rather than VideoMAE's multi-scale crop ([1, .875, .75, .66] of the short side,
resized to 224); no flip, as VideoMAE's pretraining.

Variants: (none) the recipe above, `demo`, `smoke` (`configs/ssl.py`): the demo's 8-frame 64 px
clips in 2x8x8 tubelets (4 x 8 x 8 tokens), encoder width 64 (smoke 32), 2 blocks, decoder
width 32, 1 block, masking ratio 0.75.
"""

from __future__ import annotations

import ml_collections

from configs.ssl import PRETRAIN_VARIANTS, pretrain_config

VARIANTS = PRETRAIN_VARIANTS  # Every `arg` get_config takes.
STEPS_PER_EPOCH = 9537 // 192


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, variant = pretrain_config(arg, "ucf101")
    config.model.name = "vivit_joint"
    config.objective = ml_collections.ConfigDict(
        {
            "name": "videomae",
            "mask_ratio": 0.75,
            "decoder_width": 384,
            "decoder_depth": 4,
            "decoder_heads": 6,
            "normalize_target": True,
        }
    )
    config.optimizer.name = "adamw"
    config.optimizer.weight_decay = 0.05
    config.optimizer.schedule = "cosine"
    if variant == "ucf101":
        for key, value in {
            "width": 768,
            "depth": 12,
            "num_heads": 12,
            "patch": 16,
            "tubelet_frames": 2,
            "image_size": 224,
            "num_frames": 16,
            "position": "sinusoidal",
            "drop_path": 0.0,
        }.items():
            config.model[key] = value
        config.data.num_frames = 16
        config.data.frame_stride = 4
        config.data.crop_size = 224
        config.data.flip = False
        config.data.mean = (0.485, 0.456, 0.406)
        config.data.std = (0.229, 0.224, 0.225)
        config.batch_size = 192
        config.optimizer.lr = 3e-4 * config.batch_size / 256
        config.optimizer.warmup_steps = 40 * STEPS_PER_EPOCH
        config.num_train_steps = 3201 * STEPS_PER_EPOCH
    else:
        for key, value in {
            "width": 32 if variant == "smoke" else 64,
            "depth": 2,
            "num_heads": 4,
            "patch": 8,
            "tubelet_frames": 2,
            "image_size": config.data.crop_size,
            "num_frames": config.data.num_frames,
            "position": "sinusoidal",
            "drop_path": 0.0,
        }.items():
            config.model[key] = value
        config.objective.decoder_width = 32
        config.objective.decoder_depth = 1
        config.objective.decoder_heads = 4
        config.optimizer.lr = 1e-3
    config.lock()
    return config
