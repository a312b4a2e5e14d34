"""3D ResNet-101 (bottleneck) of Hara et al. 2018, 16x112x112 clips; `--config.model.non_local=True`
adds non-local blocks.

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`.
"""

from __future__ import annotations

from configs.supervised import VARIANTS, supervised_config

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None):
    return supervised_config("resnet3d_101", arg, model={"non_local": False})
