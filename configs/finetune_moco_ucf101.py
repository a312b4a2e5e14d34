"""Fine-tuning, linear probe or kNN of the R3D-18 that `configs/pretrain_moco_ucf101.py`
pretrains: `--config=configs/finetune_moco_ucf101.py[:VARIANT[,STAGE]]
--config.init_from=PRETRAIN_WORKDIR` (variants and stages: `configs/ssl.py`).

The dataset variant fine-tunes as the supervised R3D-18 recipe (`configs/supervised.py`: SGD
lr 0.1 would wipe out the pretrained features, so lr 0.01), 100 epochs at batch 64, lr x0.1
after 60 and 80, tested on 10 clips x 3 crops. The linear probe trains the classifier for the
same number of steps at lr 0.1 (the head starts from zero knowledge; the encoder is frozen).
"""

from __future__ import annotations

import ml_collections

from configs import pretrain_moco_ucf101
from configs.ssl import DERIVED_VARIANTS, derived_config

VARIANTS = DERIVED_VARIANTS  # Every `arg` get_config takes.
STEPS_PER_EPOCH = 9537 // 64


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = derived_config(pretrain_moco_ucf101.get_config, arg)
    variant, _, stage = (arg or "").partition(",")
    if variant in ("", "ucf101") and stage in ("", "finetune", "linear_probe"):
        with config.unlocked():
            config.optimizer.name = "sgd"
            config.optimizer.lr = 0.1 if stage == "linear_probe" else 0.01
            config.optimizer.schedule = "step"
            config.optimizer.lr_steps = (60 * STEPS_PER_EPOCH, 80 * STEPS_PER_EPOCH)
            config.optimizer.warmup_steps = 0
            config.num_train_steps = 100 * STEPS_PER_EPOCH
    return config
