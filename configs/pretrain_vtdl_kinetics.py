"""VTDL (`vtdl`) pretraining on Kinetics-400, as the seed's `scripts/TemporalDis/kinetics.sh`:
batch 10, a queue of 12,500 keys. The seed trains on a tenth of Kinetics-400 (its list
`ssd_kinetics_video_trainlist_1of10.txt`, 23,464 videos); here the same number of steps (240
epochs of that list) runs over the whole training split that `configs/supervised.py` names,
about 24 epochs of it. The rest of the recipe, the ablation rows (`baseline`, `ba`, `td`, `tca`)
and the variants are those of `configs/pretrain_vtdl_ucf101.py`.
"""

from __future__ import annotations

import ml_collections

from configs.pretrain_vtdl_ucf101 import VARIANTS, vtdl_pretrain_config

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return vtdl_pretrain_config(
        arg, "kinetics", batch_size=10, queue_size=12500, train_videos=23464
    )
