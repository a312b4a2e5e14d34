"""CNN+LSTM with a ViT-B/16 frame encoder: the LSTM (512 hidden, last state) over 4 frames 8 apart
at 224 px as `configs/cnn_lstm_resnet18.py`, the ViT and its optimisation as
`configs/per_frame_vit.py` (DeiT's recipe; the imported ImageNet weights fill the ViT only:
`--arch cnn_lstm_vit`).

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
        "cnn_lstm_vit",
        arg,
        num_frames=4,
        frame_stride=8,
        model={"hidden": 512, "pool": "last"},
        demo_model={"hidden": 64, "pool": "last"},
    )
