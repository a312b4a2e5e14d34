"""I3D (Carreira & Zisserman 2017; piergiaj/pytorch-i3d layout), 64 consecutive frames at 224 px.

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`.
"""

from __future__ import annotations

from configs.supervised import VARIANTS, supervised_config

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None):
    return supervised_config("i3d", arg, num_frames=64, frame_stride=1, crop_size=224)
