"""Fine-tuning, linear probe or kNN of the 2D-ResNet-18 + Transformer that
`configs/pretrain_cpctrans_ucf101.py` pretrains: `--config=configs/finetune_cpctrans_ucf101.py
[:VARIANT[,STAGE]] --config.init_from=PRETRAIN_WORKDIR` (variants and stages: `configs/ssl.py`).

The seed's fine-tuning (`Evaluate/test.py`, README; "7pred3"): 7 frames, every 3rd, 224 px;
Adam lr 1e-3, weight decay 1e-3, dropout 0.5, lr x0.1 every 100 epochs, 300 epochs at batch 16:
178,800 steps, decays after 59,600 and 119,200. The seed gives its backbone and Transformer a
tenth of the classifier's rate and classifies from its ConvGRU; here one rate for all and the
zoo's `transformer_resnet18` (Transformer, norm, mean over frames, classifier), tested on 10
clips x 3 crops. Weight decay is optax's decoupled `adamw`.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain_cpctrans_ucf101
from configs.ssl import DERIVED_VARIANTS, derived_config

VARIANTS = DERIVED_VARIANTS  # Every `arg` get_config takes.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = derived_config(pretrain_cpctrans_ucf101.get_config, arg)
    variant, _, stage = (arg or "").partition(",")
    if variant in ("", "ucf101"):
        with config.unlocked():
            config.data.num_frames = 7
            if stage in ("", "finetune"):
                config.optimizer.name = "adamw"
                config.optimizer.lr = 1e-3
                config.optimizer.weight_decay = 1e-3
                config.optimizer.schedule = "step"
                config.optimizer.lr_steps = (59_600, 119_200)
                config.optimizer.lr_decay = 0.1
                config.optimizer.warmup_steps = 0
                config.num_train_steps = 178_800
    return config
