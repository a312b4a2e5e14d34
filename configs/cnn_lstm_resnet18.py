"""CNN+LSTM (the Kinetics seed): ResNet-18 per frame, LSTM (512 hidden) over 4 frames at 224 px.

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`.
"""

from __future__ import annotations

from configs.supervised import VARIANTS, supervised_config

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None):
    return supervised_config(
        "cnn_lstm_resnet18",
        arg,
        num_frames=4,
        frame_stride=8,
        crop_size=224,
        model={"hidden": 512, "pool": "last"},
        demo_model={"hidden": 64, "pool": "last"},
    )
