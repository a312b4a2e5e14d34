"""VTDL (`vtdl`) pretraining on HMDB51 split 1, as the seed's `scripts/TemporalDis/hmdb51.sh`:
batch 16, a queue of 3569 keys (all training videos but one of the 3,570); the rest of the
recipe, the ablation rows (`baseline`, `ba`, `td`, `tca`) and the variants are those of
`configs/pretrain_vtdl_ucf101.py`.
"""

from __future__ import annotations

import ml_collections

from configs.pretrain_vtdl_ucf101 import VARIANTS, vtdl_pretrain_config

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return vtdl_pretrain_config(arg, "hmdb51", batch_size=16, queue_size=3569, train_videos=3570)
