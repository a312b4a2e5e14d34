"""Fine-tuning, linear probe or kNN of the encoder that `configs/pretrain_vtdl_ucf101.py`
pretrains, for each row of VTDL's ablation:

    python -m vssl_jax.main --config=configs/finetune_vtdl_ucf101.py:td+demo,finetune \\
        --config.init_from=PRETRAIN_WORKDIR --workdir=W

`arg` = PRETRAIN_ARG[,STAGE]: PRETRAIN_ARG as the pretrain file takes it (ROW, VARIANT or
ROW+VARIANT; the row only matters for bookkeeping here: the fine-tuning is the same for all
four), STAGE `finetune` (default), `linear_probe` or `knn` (`configs/ssl.py`).

The seed fine-tunes I3D on 64 consecutive frames (`main.py --method ft`, `data_length` 64,
stride 1) with SGD lr 0.001 (x0.1 after 1/2 and 3/4 of 60 epochs here): the dataset variant
does the same, tested on 10 clips x 3 crops at 224 px. At batch 8, an epoch of UCF101 split 1
is 1,192 steps.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain_vtdl_ucf101
from configs.ssl import DERIVED_STAGES, derived_config

VARIANTS = (  # Every `arg` get_config takes.
    *pretrain_vtdl_ucf101.VARIANTS,
    *(
        f"{arg or ''},{stage}"
        for arg in pretrain_vtdl_ucf101.VARIANTS
        for stage in DERIVED_STAGES[1:]
    ),
)
STEPS_PER_EPOCH = 9537 // 8
EPOCHS = 60


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = derived_config(pretrain_vtdl_ucf101.get_config, arg)
    pretrain_arg, _, stage = (arg or "").partition(",")
    _, variant = pretrain_vtdl_ucf101.parse_arg(pretrain_arg, "ucf101")
    if variant in (None, "ucf101") and stage in ("", "finetune"):
        with config.unlocked():
            config.data.num_frames = 64
            config.data.frame_stride = 1
            config.optimizer.lr = 0.001
            config.optimizer.lr_steps = (
                EPOCHS * STEPS_PER_EPOCH // 2,
                EPOCHS * STEPS_PER_EPOCH * 3 // 4,
            )
            config.num_train_steps = EPOCHS * STEPS_PER_EPOCH
    return config
