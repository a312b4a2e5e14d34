"""TSN with a ResNet-18 (Wang et al. 2016): the video cut into 3 segments, one random frame of
each (`data.sampler = "segments"`), 224 px, dropout 0.8 before the classifier (tsn-pytorch's RGB
setting). The test takes the centre frames of the segments, and with `num_test_clips` N the
frames at N evenly spread offsets inside each segment (the dataset variants: 10 x 3 crops, 30
frames a video where TSN's test takes 25).

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
        frame_stride=1,
        crop_size=224,
        sampler="segments",
        model={"dropout": 0.8},
        demo_model={},
    )
