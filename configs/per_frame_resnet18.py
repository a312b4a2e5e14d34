"""Per-frame ResNet-18 (the Kinetics CNN+LSTM seed's baseline): 4 frames at 224 px, probabilities
averaged over frames. `configs/frame_vs_lstm.py` compares it with the CNN+LSTM.

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`.
"""

from __future__ import annotations

from configs.supervised import VARIANTS, supervised_config

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None):
    return supervised_config("per_frame_resnet18", arg, num_frames=4, frame_stride=8, crop_size=224)
