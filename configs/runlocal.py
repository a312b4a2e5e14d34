"""`--runlocal`: any config shrunk to seconds on a CPU, keeping what makes it that config.

    python -m vssl_jax.main --config=configs/X.py[:VARIANT] --workdir=W --runlocal

runs the config's stage, objective, model, optimizer and accumulation on a tiny built-in demo
dataset (6 motion classes, 2 train and 1 val video each, 32x32 frames), at most 16 frames a clip,
at width 4, batches of 2 clips per accumulation step, for 2 steps. It is what `tests/test_all_configs.py` runs for every
config and variant, and what a user runs before a long job to see the whole path work.
"""

from __future__ import annotations

import copy

import ml_collections

SIZE = 32


def shrink(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` at smoke size (see the module docstring); `config` is unchanged."""
    small = copy.deepcopy(config)
    with small.unlocked():
        data = small.data
        data.builtin = "demo"
        data.data_dir = ""
        data.train_split = "train"
        data.eval_split = "val"
        data.demo.train_per_class = 2
        data.demo.val_per_class = 1
        data.demo.size = SIZE
        data.demo.seed = 0
        data.num_workers = 0
        data.crop_size = min(data.crop_size, SIZE)
        data.num_frames = min(data.num_frames, 16)
        data.num_test_clips = min(data.num_test_clips, 2)
        data.num_test_crops = 1
        model = small.model
        model.width = min(model.get("width", 4), 4)
        tiny_sizes = (
            ("transformer_width", 16),
            ("transformer_depth", 1),
            ("num_heads", 2),
            ("transformer_heads", 2),
            ("depth", 1),  # ViT blocks
            ("temporal_depth", 1),
        )
        for key, tiny in tiny_sizes:
            if key in model:
                model[key] = min(model[key], tiny)
        small.batch_size = 2 * small.grad_accum_steps
        small.eval_batch_size = 4
        small.num_train_steps = 2
        small.log_every = 1
        small.checkpoint_every = 2
        small.eval_every = 0
        small.optimizer.warmup_steps = 0
        small.knn.k = min(small.knn.k, 3)
        if "patch_size" in small.objective:  # TimeCycle: a 32 px frame leaves a tiny map.
            small.objective.patch_size = 1
    return small
