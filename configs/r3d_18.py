"""R3D-18 (torchvision `video.r3d_18`; Tran et al. 2018), 16x112x112 clips.

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`.
"""

from __future__ import annotations

from configs.supervised import VARIANTS, supervised_config

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None):
    return supervised_config("r3d_18", arg)
