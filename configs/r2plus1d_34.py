"""R(2+1)D-34 (Tran et al. 2018; torchvision's block layout), 16x112x112 clips.

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`.
"""

from __future__ import annotations

from configs.supervised import supervised_config


def get_config(arg: str | None = None):
    return supervised_config("r2plus1d_34", arg)
