"""ViT-B/16 + Transformer: `configs/transformer_resnet18.py`'s temporal Transformer (4 pre-norm
blocks of width 512, 8 heads, over 8 frames 4 apart at 224 px) on a ViT-B/16 frame encoder, the
ViT and its optimisation as `configs/per_frame_vit.py` (DeiT's recipe; the imported ImageNet
weights fill the ViT only: `--arch transformer_vit`). The frame encoder of
`configs/pretrain_cpcvit_ucf101.py`.

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
        "transformer_vit",
        arg,
        num_frames=8,
        frame_stride=4,
        model={"transformer_width": 512, "transformer_depth": 4, "transformer_heads": 8},
        demo_model={"transformer_width": 64, "transformer_depth": 2, "transformer_heads": 4},
    )
