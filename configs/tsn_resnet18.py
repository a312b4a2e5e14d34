"""TSN with a ResNet-18 (Wang et al. 2016): 3 frames 24 apart, 224 px, dropout 0.8 before the
classifier (tsn-pytorch's RGB setting). The input pipeline samples one dense clip: the 3 frames
span 49 frames rather than 3 segments of the whole video.

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`.
"""

from __future__ import annotations

from configs.supervised import VARIANTS, supervised_config

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None):
    return supervised_config(
        "tsn_resnet18",
        arg,
        num_frames=3,
        frame_stride=24,
        crop_size=224,
        model={"dropout": 0.8},
        demo_model={},
    )
