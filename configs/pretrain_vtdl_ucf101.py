"""VTDL (`vtdl`) pretraining on UCF101 split 1, as the seed's `scripts/TemporalDis/ucf101.sh`;
kNN retrieval at the end. The HMDB51 and Kinetics files derive from `vtdl_pretrain_config` here.

The seed's recipe (`train_temporal_dis.py` with `--softmax --moco`): I3D, clips of 16 frames
4 apart at 224 px, ImageNet normalisation, no flip; SGD lr 0.003, momentum 0.9, weight decay
1e-4, 240 epochs, lr x0.1 after epochs 120, 160 and 200, incomplete batches dropped; InfoNCE
at temperature 0.07 with a queue (`nce_k`), key momentum 0.999; a linear 128-d head.
Per dataset (batch, queue): UCF101 (8, 5000), HMDB51 (16, 3569), Kinetics (10, 12500).
Differences: weight decay skips biases and normalisation scales (`vssl_jax.optimizers`; the
seed's SGD decays every weight). The seed fine-tunes I3D on 64 consecutive frames (`main.py
--method ft`, `data_length` 64, stride 1); a finetune derived from this file keeps the
pretraining clip (16 frames, stride 4) unless it sets `data.num_frames` 64, `data.frame_stride` 1.

Variants (`--config=configs/pretrain_vtdl_ucf101.py:ARG`), ARG = ROW, VARIANT or ROW+VARIANT:
- ROW, the rows of the paper's ablation, each adding one switch to the row above
  (seed README, UCF101 / HMDB51 finetune top-1):
  `baseline` (60.3 / 22.6): MoCo-style, anchor and positive the same frames, random crops;
  `ba` (63.3 / 26.2): + basic augmentation (rotation, colour jitter);
  `td` (72.7 / 41.2): + temporal discriminative negatives;
  `tca` (82.3 / 52.9, the default): + temporal consistent augmentation (intra-video mixup).
- VARIANT as `configs/ssl.py`: (none) the dataset recipe, `demo`, `smoke`. Demo and smoke train
  C3D (the zoo's VTDL backbone) on the demo's 64 px frames, with a queue below one epoch of
  keys. E.g. `demo+td`; a finetune file passes `demo+td,finetune`.
"""

from __future__ import annotations

import ml_collections

from configs import ssl

# The ablation rows: each turns on one more switch of `vssl_jax.objectives.vtdl`.
ROWS = {
    "baseline": (False, False, False),
    "ba": (True, False, False),
    "td": (True, True, False),
    "tca": (True, True, True),
}
# Every `arg` get_config takes: a row alone (the dataset recipe), or with demo / smoke.
VARIANTS = (None, *ROWS, *(f"{row}+{v}" for row in ROWS for v in ssl.VARIANTS))
EPOCHS = 240
DECAY_EPOCHS = (120, 160, 200)


def parse_arg(arg: str | None, dataset: str) -> tuple[str, str | None]:
    """`ROW`, `VARIANT` or `ROW+VARIANT` -> (row, variant or None)."""
    row, variant = "tca", None
    for part in (arg or "").split("+"):
        if part in ROWS:
            row = part
        elif part in (*ssl.VARIANTS, dataset) and variant is None:
            variant = part
        elif part:
            raise ValueError(
                f"unknown VTDL variant '{arg}': ROW, VARIANT or ROW+VARIANT with ROW in "
                f"{', '.join(ROWS)} and VARIANT in {', '.join((dataset, *ssl.VARIANTS))}"
            )
    return row, variant


def vtdl_pretrain_config(
    arg: str | None, dataset: str, *, batch_size: int, queue_size: int, train_videos: int
) -> ml_collections.ConfigDict:
    """The seed's recipe on `dataset` (`train_videos` training videos, the seed's list) with the
    ablation row and variant that `arg` names; locked."""
    row, variant = parse_arg(arg, dataset)
    config, variant = ssl.pretrain_config(variant, dataset)
    basic_augment, temporal_negatives, tca = ROWS[row]
    config.objective = ml_collections.ConfigDict(
        {
            "name": "vtdl",
            "embedding_dim": 128,
            "head_layers": 1,
            "queue_size": queue_size,
            "momentum": 0.999,
            "temperature": 0.07,
            "basic_augment": basic_augment,
            "rotation_degrees": 10.0,
            "color_jitter": (0.5, 0.5, 0.25, 0.5),
            "temporal_negatives": temporal_negatives,
            "negative_min_gap": 2,
            "temporal_consistency_augment": tca,
            "tca_max_weight": 0.1,
        }
    )
    if variant == dataset:
        steps_per_epoch = train_videos // batch_size
        config.model.name = "i3d"
        config.data.num_frames = 16
        config.data.frame_stride = 4
        config.data.crop_size = 224
        config.data.flip = False
        config.data.mean = (0.485, 0.456, 0.406)
        config.data.std = (0.229, 0.224, 0.225)
        config.optimizer.name = "sgd"
        config.optimizer.lr = 0.003
        config.optimizer.momentum = 0.9
        config.optimizer.weight_decay = 1e-4
        config.optimizer.schedule = "step"
        config.optimizer.warmup_steps = 0
        config.optimizer.lr_steps = tuple(e * steps_per_epoch for e in DECAY_EPOCHS)
        config.optimizer.lr_decay = 0.1
        config.batch_size = batch_size
        config.num_train_steps = EPOCHS * steps_per_epoch
    else:
        config.model.name = "c3d"
        # The demo's 288 training videos (96 in smoke): keep the queue below an epoch of keys.
        config.objective.queue_size = 64 if variant == "smoke" else 256
    config.lock()
    return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return vtdl_pretrain_config(arg, "ucf101", batch_size=8, queue_size=5000, train_videos=9537)
