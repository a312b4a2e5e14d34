"""TSN with a ResNet-50 (as `configs/tsn_resnet18.py`).

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`.
"""

from __future__ import annotations

from configs.supervised import VARIANTS, supervised_config

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None):
    return supervised_config(
        "tsn_resnet50",
        arg,
        num_frames=3,
        frame_stride=1,
        crop_size=224,
        sampler="segments",
        model={"dropout": 0.8},
        demo_model={},
    )
