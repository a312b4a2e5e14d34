"""Fine-tuning, linear probe or kNN of the ViT-B that `configs/pretrain_videomae_ucf101.py`
pretrains: `--config=configs/finetune_videomae_ucf101.py[:VARIANT[,STAGE]]
--config.init_from=PRETRAIN_WORKDIR` (variants and stages: `configs/ssl.py`).

VideoMAE's UCF101 fine-tuning (`scripts/ucf101/.../finetune.sh` with `run_class_finetuning.py`'s
defaults): AdamW, base lr 5e-4 per 256 at 16 videos x 8 GPUs = 128, i.e. 2.5e-4, weight decay
0.05, layer-wise lr decay 0.7 (`optimizer.layer_decay`), 5 warm-up epochs then cosine, 100
epochs (9,537 / 128 = 74 steps an epoch: 7,400 steps, 370 of warm-up); dropout 0.5 before the
classifier, stochastic depth 0.2, label smoothing 0.1; tested on 5 clips x 3 crops. The
encoder's final LayerNorm comes pretrained and the classifier reads the token mean after it
(VideoMAE drops the pretrained norm and normalises the mean with a fresh `fc_norm`,
`vssl_jax/models/video_vit.py`).
Deviations: no mixup, cutmix, RandAugment or random erasing (the zoo's clip sampler has none),
no repeated augmentation (VideoMAE's `num_sample 2` draws 2 clips of each video per step: 256
clips from 128 videos), the cosine ends at 0 instead of min_lr 5e-6.
The demo and smoke variants fine-tune with `run_class_finetuning.py`'s defaults for stochastic
depth (0.1) and layer decay (0.75), at the pretraining's learning rate.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain_videomae_ucf101
from configs.ssl import DERIVED_VARIANTS, derived_config

VARIANTS = DERIVED_VARIANTS  # Every `arg` get_config takes.
STEPS_PER_EPOCH = 9537 // 128


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = derived_config(pretrain_videomae_ucf101.get_config, arg)
    variant, _, stage = (arg or "").partition(",")
    if stage not in ("", "finetune"):
        return config
    with config.unlocked():
        if variant in ("", "ucf101"):
            config.model.drop_path = 0.2
            config.model.dropout = 0.5
            config.objective.label_smoothing = 0.1
            config.data.num_test_clips = 5
            config.data.num_test_crops = 3
            config.optimizer.name = "adamw"
            config.batch_size = 128
            config.optimizer.lr = 5e-4 * config.batch_size / 256
            config.optimizer.weight_decay = 0.05
            config.optimizer.layer_decay = 0.7
            config.optimizer.schedule = "cosine"
            config.optimizer.warmup_steps = 5 * STEPS_PER_EPOCH
            config.num_train_steps = 100 * STEPS_PER_EPOCH
        else:
            config.model.drop_path = 0.1
            config.optimizer.layer_decay = 0.75
    return config
