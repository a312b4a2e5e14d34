"""The VTDL seed's test protocol: the logits of ten clips spread evenly over each video (centre
crop) are averaged. Evaluates the latest checkpoint in --workdir of a run of `configs/demo.py`
(the `arg` picks the demo variant):

    python -m vssl_jax.main --config=configs/eval_ten_clips.py --workdir=/tmp/vssl_demo
"""

from __future__ import annotations

from configs.demo import get_config as get_demo_config

VARIANTS = (None, "smoke")  # Every `arg` get_config takes.


def get_config(arg: str | None = None):
    config = get_demo_config(arg)
    config.stage = "eval"
    config.data.num_test_clips = 10
    config.data.num_test_crops = 1
    return config
