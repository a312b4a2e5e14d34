"""Every config in `configs/`, every variant it offers, kept alive.

Each config module lists the `arg`s its `get_config` takes in `VARIANTS`. Every (file, variant)
is loaded and shrunk with `configs/runlocal.py` (what `--runlocal` does); its train step is traced
and lowered on a batch of its objective's own sampler (`vssl_jax.dry_run.plan`), which catches
a misspelt key, a model or objective that is not registered, a clip that does not fit the model.
Then one config of each (stage, objective) pair runs end to end, 2 steps plus the stage's
evaluation. A new config file is covered without anyone editing this test.
"""

import glob
import importlib
import json
import os

import pytest

from configs.runlocal import shrink
from vssl_jax import dry_run, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Modules of `configs/` that hold shared code, not an experiment.
LIBRARIES = {"__init__", "base", "supervised", "ssl", "runlocal"}


def _config_modules() -> list[str]:
    names = [os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py"))]
    return sorted(n for n in names if n not in LIBRARIES)


def _cases() -> list[tuple[str, object]]:
    cases = []
    for name in _config_modules():
        module = importlib.import_module(f"configs.{name}")
        cases.extend((name, variant) for variant in getattr(module, "VARIANTS", ()))
    return cases


def _shrunk(name: str, variant):
    return shrink(importlib.import_module(f"configs.{name}").get_config(variant))


def _unique_cases():
    """The first (file, variant) of every distinct train step: model, objective and its
    switches, accumulation, trainable parameters."""
    seen, unique = set(), []
    for name, variant in _cases():
        config = _shrunk(name, variant)
        # The model, the objective's switches and what is trained change the code traced; a
        # dataset variant's clip length, width or queue size change only sizes and values.
        switches = {k: v for k, v in config.objective.items() if isinstance(v, bool | str)}
        key = json.dumps(
            [config.model.name, switches, config.grad_accum_steps, config.optimizer.trainable],
            sort_keys=True,
            default=str,
        )
        if key not in seen:
            seen.add(key)
            unique.append((name, variant))
    return unique


CASES = _cases()
UNIQUE = _unique_cases()


def test_every_config_lists_variants_that_load():
    for name in _config_modules():
        module = importlib.import_module(f"configs.{name}")
        assert hasattr(module, "VARIANTS"), f"configs/{name}.py: add VARIANTS (its get_config args)"
    for name, variant in CASES:
        config = importlib.import_module(f"configs.{name}").get_config(variant)
        assert config.is_locked, f"configs/{name}.py:{variant} returns an unlocked config"


@pytest.mark.parametrize("name, variant", UNIQUE, ids=[f"{n}:{v}" for n, v in UNIQUE])
def test_config_traces_its_train_step(name, variant):
    facts = dry_run.plan(_shrunk(name, variant), compile_step=False)
    assert facts["params_encoder"] > 0 and facts["encoder_gflops_per_clip"] > 0


def _representatives():
    chosen = {}
    for name, variant in CASES:
        config = _shrunk(name, variant)
        chosen.setdefault((config.stage, config.objective.name), (name, variant))
    return sorted(chosen.values(), key=str)


def _run(config, workdir: str) -> dict:
    """Runs `config`'s stage, first making what it starts from: a checkpoint of the same model
    (for `eval`, `features`, and `knn` without `init_from`) or a pretrained encoder (for
    `finetune`, `linear_probe`, `knn` with `init_from`)."""
    with config.unlocked():
        if config.stage in ("finetune", "linear_probe", "knn"):
            source = os.path.join(workdir, "source")
            config.init_from = source
            main.run(_as_supervised_training(config), source)
        elif config.stage in ("eval", "features"):
            main.run(_as_supervised_training(config), workdir)
    config.lock()
    return main.run(config, workdir)


def _as_supervised_training(config):
    import copy

    source = copy.deepcopy(config)
    with source.unlocked():
        source.stage = "train"
        source.init_from = ""
        source.objective.name = "supervised"
        source.optimizer.trainable = ""
    return source


REPRESENTATIVES = _representatives()


@pytest.mark.parametrize(
    "name, variant", REPRESENTATIVES, ids=[f"{n}:{v}" for n, v in REPRESENTATIVES]
)
def test_stage_runs_end_to_end(name, variant, tmp_path):
    results = _run(_shrunk(name, variant), str(tmp_path))
    assert results.get("top1", results.get("knn_top1", results.get("feature_dim"))) is not None
