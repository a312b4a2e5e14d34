"""2D ResNet-18 + Transformer (the CPCTrans seed's backbone): 8 frames at 224 px, 4 pre-norm
blocks of width 512 with 8 heads.

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`.
"""

from __future__ import annotations

from configs.supervised import VARIANTS, supervised_config

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None):
    return supervised_config(
        "transformer_resnet18",
        arg,
        num_frames=8,
        frame_stride=4,
        crop_size=224,
        model={"transformer_width": 512, "transformer_depth": 4, "num_heads": 8},
        demo_model={"transformer_width": 64, "transformer_depth": 2, "num_heads": 4},
    )
