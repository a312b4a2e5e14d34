"""CNN+LSTM vs per-frame ResNet-18 with identical data, budget and optimizer (the Kinetics seed's
comparison):

    python -m vssl_jax.compare --config=configs/frame_vs_lstm.py --workdir=W \
        --models=per_frame_resnet18,cnn_lstm_resnet18

`vssl_jax.compare` trains each named model with this config, so it sets only options that both
models take (the LSTM keeps its 512 hidden units). Variants as `configs/supervised.py`: the demo's
8-frame clips, or 4 frames 8 apart at 224 px on the datasets.
"""

from __future__ import annotations

from configs.supervised import VARIANTS, supervised_config

__all__ = ["VARIANTS", "get_config"]  # VARIANTS: every `arg` get_config takes.


def get_config(arg: str | None = None):
    return supervised_config("cnn_lstm_resnet18", arg, num_frames=4, frame_stride=8, crop_size=224)
