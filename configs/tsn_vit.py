"""TSN with a ViT-B/16 frame encoder: TSN's sampling and consensus as `configs/tsn_resnet18.py`
(3 segments, one random frame of each, 224 px, dropout 0.8 before the classifier, the test's
frames spread inside the segments), the ViT and its optimisation as `configs/per_frame_vit.py`
(DeiT's recipe; start from imported ImageNet weights: `--arch tsn_vit` there).

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`.
"""

from __future__ import annotations

import ml_collections

from configs.per_frame_vit import vit_config
from configs.supervised import VARIANTS

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return vit_config(
        "tsn_vit", arg, num_frames=3, frame_stride=1, sampler="segments", model={"dropout": 0.8}
    )
