"""Defaults every experiment starts from; an experiment config overrides a few fields."""

from __future__ import annotations

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # "train" (supervised from scratch), "pretrain" (self-supervised objective, kNN eval),
    # "finetune" / "linear_probe" (from `init_from`'s encoder; whole network / classifier only),
    # "knn" (retrieval with `init_from`'s or the latest checkpoint's encoder), "eval", "features".
    config.stage = "train"
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.builtin = ""  # "demo": build the built-in demo dataset if missing.
    config.data.data_dir = ""  # A `python -m data_prep convert` output folder.
    config.data.train_split = "train"
    config.data.eval_split = "val"
    config.data.num_frames = 16
    config.data.frame_stride = 2
    config.data.crop_size = 112
    config.data.flip = True
    # "dense" clips, or "segments": TSN's one frame from each of num_frames equal segments.
    config.data.sampler = "dense"
    # Eval views per video, logits averaged: clips spread evenly x crops (1 centre, 3 along the
    # long side). 10 x 3 is the usual "multi-view test"; 1 x 1 is the fast centre-clip eval.
    config.data.num_test_clips = 1
    config.data.num_test_crops = 1
    # Kinetics statistics, as torchvision's video models use.
    config.data.mean = (0.43216, 0.394666, 0.37645)
    config.data.std = (0.22803, 0.22145, 0.216989)
    config.data.num_workers = 2  # grain worker processes; 0 reads in the main process.
    config.data.demo = ml_collections.ConfigDict(
        {
            "train_per_class": 48,
            "val_per_class": 16,
            "size": 64,
            "seed": 0,
            "background": "photo",
            "motion": "constant",
        }
    )

    config.model = ml_collections.ConfigDict()
    config.model.name = "r3d_18"
    config.model.width = 64
    config.model.dropout = 0.5
    config.model.dtype = "float32"  # Compute dtype; "bfloat16" on accelerators.

    config.objective = ml_collections.ConfigDict()
    config.objective.name = "supervised"
    config.objective.label_smoothing = 0.0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"  # "sgd" (momentum) or "adamw".
    config.optimizer.lr = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-3
    config.optimizer.schedule = "cosine"  # "cosine", "step" or "constant".
    config.optimizer.warmup_steps = 0
    config.optimizer.lr_steps = ()  # "step" schedule: steps where lr *= lr_decay.
    config.optimizer.lr_decay = 0.1
    config.optimizer.grad_clip_norm = 0.0  # 0 disables clipping.
    # Regex on parameter paths ("encoder/blocks/0/conv1/kernel"); only matches are updated.
    # "" trains everything; the linear_probe stage sets "^head/".
    config.optimizer.trainable = ""
    # Layer-wise lr decay for fine-tuning transformers (BEiT / VideoMAE use 0.65-0.75): block i
    # (0-based) of L gets lr x layer_decay^(L - i); the patch embedding, position tables and class
    # tokens layer_decay^(L + 1); the final norm and heads lr (`vssl_jax.optimizers.layer_ids`).
    # 1.0: off.
    config.optimizer.layer_decay = 1.0

    config.batch_size = 32  # Global, over all devices, hosts and accumulation steps.
    # Micro-batches per update (gradients averaged, one optimizer step): the global batch of a
    # paper's 64 GPUs on a few. Steps, schedules and checkpoints count updates.
    config.grad_accum_steps = 1
    config.eval_batch_size = 32
    config.num_train_steps = 1000
    config.log_every = 50
    config.eval_every = 0  # 0: evaluate only at the end.
    config.checkpoint_every = 500
    config.keep_checkpoints = 3
    # Keep compiled XLA executables in `$VSSL_JAX_CACHE/xla` (or JAX_COMPILATION_CACHE_DIR when
    # set), so a rerun or a resumed run of the same step loads it instead of compiling again.
    config.compilation_cache = True
    # Weights to start from: a pretrain/train workdir (its latest checkpoint's encoder) or a
    # `python -m vssl_jax.tools.import_torch --out DIR` folder. The classifier head is not
    # loaded when its shape differs; any other shape mismatch is an error naming the paths.
    config.init_from = ""

    # Retrieval / kNN (the `knn` stage and the end of `pretrain`): features of `eval_split`
    # clips query those of `train_split`, cosine similarity.
    config.knn = ml_collections.ConfigDict()
    config.knn.recall_at = (1, 5, 10, 20, 50)
    config.knn.k = 20  # Neighbours that vote for the kNN top-1 (weighted as Wu et al. 2018).
    config.knn.temperature = 0.07
    # A step whose loss or gradient is not finite stops the run (naming the step) before any
    # checkpoint is written; True instead skips such updates and counts them in the metrics.
    config.skip_nonfinite = False

    # Mesh axis sizes; -1 takes the remaining devices. The batch is split over both axes.
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
    # (regex on parameter path, "replicate" | "fsdp"); first match wins, default replicate.
    # Transformers (ViT, ViViT, VideoMAE): `config.sharding_rules = sharding.TRANSFORMER_FSDP`
    # (`from vssl_jax import sharding`) splits attention, MLP and embedding kernels and position
    # tables over the `fsdp` axis; set `config.mesh.fsdp` > 1 for it to take effect.
    config.sharding_rules = ((".*", "replicate"),)
    return config
