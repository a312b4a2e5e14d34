"""ResNet-101-I3D of the video_classification_pytorch seed, 32x224x224 clips (options as
`configs/i3d_resnet50.py`).

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`.
"""

from __future__ import annotations

from configs.supervised import VARIANTS, supervised_config

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None):
    return supervised_config(
        "i3d_resnet101", arg, num_frames=32, crop_size=224, model={"inflate": 1, "non_local": False}
    )
