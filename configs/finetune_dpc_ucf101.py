"""Fine-tuning, linear probe or kNN of the encoder that `configs/pretrain_dpc_ucf101.py`
pretrains: `--config=configs/finetune_dpc_ucf101.py[:VARIANT[,STAGE]]
--config.init_from=PRETRAIN_WORKDIR` (variants and stages: `configs/ssl.py`).

DPC's fine-tuning on UCF101 at 128 px (`eval/test.py`): Adam lr 1e-3, weight decay 1e-3,
dropout 0.5, lr x0.1 after epochs 60 and 80 and stopped at its last milestone, 100: at batch 128
(74 steps an epoch) 7,400 steps, decays after 4,440 and 5,920. DPC fine-tunes its encoder and
ConvGRU on 8 blocks of 5 frames and averages the blocks' predictions; here the zoo encoder
alone classifies a 16-frame clip of every 3rd frame, tested on 10 clips x 3 crops. Weight decay
is optax's decoupled `adamw` (DPC's Adam adds it to the gradient).
"""

from __future__ import annotations

import ml_collections

from configs import pretrain_dpc_ucf101
from configs.ssl import DERIVED_VARIANTS, derived_config

VARIANTS = DERIVED_VARIANTS  # Every `arg` get_config takes.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = derived_config(pretrain_dpc_ucf101.get_config, arg)
    variant, _, stage = (arg or "").partition(",")
    if variant in ("", "ucf101") and stage in ("", "finetune"):
        with config.unlocked():
            config.optimizer.name = "adamw"
            config.optimizer.lr = 1e-3
            config.optimizer.weight_decay = 1e-3
            config.optimizer.schedule = "step"
            config.optimizer.lr_steps = (4_440, 5_920)
            config.optimizer.lr_decay = 0.1
            config.optimizer.warmup_steps = 0
            config.num_train_steps = 7_400
    return config
