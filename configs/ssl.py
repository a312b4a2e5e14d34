"""Self-supervised recipes: a `pretrain` config per method, and the stages that derive from it.

A pretrain file (`configs/pretrain_<method>_<dataset>.py`) builds its config with
`pretrain_config(arg, dataset)` and sets the model, objective and the paper's hyper-parameters.
Variants (`--config=configs/pretrain_X.py:VARIANT`):
- (none): the paper's recipe on the dataset the file names, shards at `DATASETS[dataset]`
  (a `python -m data_prep convert` output; point `--config.data.data_dir` elsewhere as needed);
- `demo`: the same method on the built-in demo dataset (no download; minutes on 2 CPU cores);
- `smoke`: the demo at test size (seconds to a minute).
A finetune file (`configs/finetune_<method>_<dataset>.py`) derives from its pretrain file with
`derived_config(pretrain_module.get_config, arg)`, where `arg` is `VARIANT` or `VARIANT,STAGE`
(STAGE: `finetune` (default), `linear_probe`, `knn`), and the pretrain workdir comes from the
command line: `--config.init_from=PRETRAIN_WORKDIR`.
"""

from __future__ import annotations

import os

import ml_collections

from configs import demo
from configs.supervised import DATASETS

VARIANTS = ("demo", "smoke")
DERIVED_STAGES = ("finetune", "linear_probe", "knn")
# Every `arg` a pretrain file's / a derived file's get_config takes (`tests/test_all_configs.py`).
PRETRAIN_VARIANTS = (None, *VARIANTS)
DERIVED_VARIANTS = (
    *PRETRAIN_VARIANTS,
    *(f"{v or ''},{stage}" for v in PRETRAIN_VARIANTS for stage in DERIVED_STAGES[1:]),
)


def variant_of(arg: str | None, dataset: str) -> str:
    """`arg`'s variant: the dataset name for the paper recipe, `demo` or `smoke`."""
    if not arg:
        return dataset
    if arg not in (*VARIANTS, dataset):
        raise ValueError(f"unknown variant '{arg}' ({', '.join((dataset, *VARIANTS))})")
    return arg


def pretrain_config(arg: str | None, dataset: str) -> tuple[ml_collections.ConfigDict, str]:
    """(unlocked config of a `pretrain` stage, variant). The caller sets model and objective
    (and, for the dataset variant, its hyper-parameters), then locks the config."""
    variant = variant_of(arg, dataset)
    config = demo.get_config("smoke" if variant == "smoke" else None)
    config.unlock()
    config.stage = "pretrain"
    config.model.dropout = 0.0
    if variant == dataset:
        data_dir, eval_split, _, _ = DATASETS[dataset]
        config.data.builtin = ""
        config.data.data_dir = os.path.expanduser(data_dir)
        config.data.eval_split = eval_split
        config.data.flip = True
        config.model.width = 64
        config.log_every = 100
        config.checkpoint_every = 2_000
    return config, variant


def derived_config(get_pretrain_config, arg: str | None) -> ml_collections.ConfigDict:
    """The `finetune` / `linear_probe` / `knn` stage of a pretrain recipe: same data, clips and
    encoder; a supervised objective on the encoder's classifier; weights from `init_from`.

    Fine-tuning trains the whole network with dropout before the classifier; the linear probe
    trains only the classifier (`optimizer.trainable = "^head/"`) on frozen features; both use
    the usual multi-view test on the dataset variants (10 clips x 3 crops).
    """
    variant, _, stage = (arg or "").partition(",")
    stage = stage or "finetune"
    if stage not in DERIVED_STAGES:
        raise ValueError(f"unknown stage '{stage}' ({', '.join(DERIVED_STAGES)})")
    config = get_pretrain_config(variant or None)
    config.unlock()
    config.stage = stage
    config.objective = ml_collections.ConfigDict({"name": "supervised", "label_smoothing": 0.0})
    if stage == "linear_probe":
        config.objective.name = "linear_probe"
        config.optimizer.trainable = "^head/"
        config.optimizer.weight_decay = 0.0
    dataset_variant = variant not in VARIANTS
    if dataset_variant:
        config.data.num_test_clips = 10
        config.data.num_test_crops = 3
    if stage == "finetune":
        config.model.dropout = 0.5 if dataset_variant else 0.2
    config.lock()
    return config
