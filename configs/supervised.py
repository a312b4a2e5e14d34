"""Supervised training of any registered model: the shared variants behind `configs/<arch>.py`.

Each architecture's file calls `supervised_config(model_name, arg, ...)` with its own clip size and
model options. Variants (`--config=configs/<arch>.py:VARIANT`):
- (none) / `demo`: the built-in demo dataset, as `configs/demo.py` (minutes on 2 CPU cores);
- `smoke`: the same at `configs/demo.py:smoke` size (about a minute);
- `ucf101`, `hmdb51`: split 1 of a `python -m data_prep convert` output, at `~/shards/ucf101_s1`
  or `~/shards/hmdb51_s1` (README), evaluated on its `test` split with 10 clips x 3 crops;
- `kinetics`: Kinetics-400 at `~/shards/k400`, `val` split, 10 x 3 views.
Point `--config.data.data_dir=...` elsewhere as needed. Records must have a short side of at least
the crop size (224 px models need frames converted with a short side >= 224).
"""

from __future__ import annotations

import os

from configs import demo

# Dataset variants: (data_dir, eval split, training steps at batch 32, warm-up steps).
# UCF101 split 1 has 9,537 training videos: 30k steps is about 100 epochs; HMDB51 (3,570) the
# same number of epochs; Kinetics-400 (~240k) about 20.
DATASETS = {
    "ucf101": ("~/shards/ucf101_s1", "test", 30_000, 1_000),
    "hmdb51": ("~/shards/hmdb51_s1", "test", 11_000, 500),
    "kinetics": ("~/shards/k400", "val", 150_000, 5_000),
}
VARIANTS = ("demo", "smoke", *DATASETS)


def supervised_config(
    model_name: str,
    arg: str | None,
    *,
    num_frames: int = 16,
    frame_stride: int = 2,
    crop_size: int = 112,
    sampler: str = "dense",
    model: dict | None = None,
    demo_model: dict | None = None,
):
    """A locked config that trains `model_name` on the variant `arg` names.

    `num_frames`, `frame_stride`, `crop_size` and `model` (constructor options) apply to the
    dataset variants; `demo_model` replaces `model` on the demo's small frames. `sampler`
    ("dense" or TSN's "segments") applies to every variant.
    """
    variant = arg or "demo"
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant '{arg}' ({', '.join(VARIANTS)})")
    config = demo.get_config("smoke" if variant == "smoke" else None)
    with config.unlocked():
        config.model.name = model_name
        config.data.sampler = sampler
        if variant in DATASETS:
            data_dir, eval_split, steps, warmup = DATASETS[variant]
            config.data.builtin = ""
            config.data.data_dir = os.path.expanduser(data_dir)
            config.data.eval_split = eval_split
            config.data.num_frames = num_frames
            config.data.frame_stride = frame_stride
            config.data.crop_size = crop_size
            config.data.flip = True
            config.data.num_test_clips = 10
            config.data.num_test_crops = 3
            config.model.width = 64
            config.model.dropout = 0.5
            config.optimizer.name = "sgd"
            config.optimizer.lr = 0.1
            config.optimizer.weight_decay = 1e-3
            config.optimizer.warmup_steps = warmup
            config.batch_size = 32
            config.num_train_steps = steps
            config.log_every = 100
            config.checkpoint_every = 2_000
            options = model or {}
        else:
            options = demo_model if demo_model is not None else model or {}
        for key, value in options.items():
            config.model[key] = value
    return config
