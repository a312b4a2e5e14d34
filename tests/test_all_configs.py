"""Every config in `configs/`, every variant it offers, kept alive.

Each config module lists the `arg`s its `get_config` takes in `VARIANTS`. Every (file, variant)
is loaded, locked, and shrunk with `configs/runlocal.py` (what `--runlocal` does). The cheapest
config of each training stage and objective (`train`, `pretrain` x objective) then runs end to
end, 2 steps plus the stage's evaluation; every other distinct train step (model x objective x trained parameters x
accumulation) is traced on a batch of its objective's own sampler (`vssl_jax.dry_run.plan`),
which catches a model or objective that is not registered, options a model does not take, a
clip that does not fit the model. A new config file is covered without anyone editing this test.
"""

import glob
import importlib
import json
import os

import pytest

from configs.runlocal import shrink
from vssl_jax import dry_run, main, objectives

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


def _step_key(config) -> str:
    """What decides the code of a config's train step: for supervised objectives the model
    (and what is trained, and the accumulation); for a self-supervised objective the objective
    itself (its models are the zoo's, each traced by its own config). A dataset variant's
    sizes, switches and rates change only values."""
    supervised = config.objective.name in ("supervised", "linear_probe")
    return json.dumps(
        [
            config.model.name if supervised else "",
            config.objective.name,
            config.optimizer.trainable,
            config.grad_accum_steps,
        ]
    )


CASES = _cases()


def test_every_config_lists_variants_that_load():
    for name in _config_modules():
        module = importlib.import_module(f"configs.{name}")
        assert hasattr(module, "VARIANTS"), f"configs/{name}.py: add VARIANTS (its get_config args)"
    for name, variant in CASES:
        config = importlib.import_module(f"configs.{name}").get_config(variant)
        assert config.is_locked, f"configs/{name}.py:{variant} returns an unlocked config"


# The end-to-end runs take the cheapest config of each (stage, objective): smoke and demo
# variants first, then small encoders.
SMALL_MODELS = ("r3d_18", "resnet3d_18", "c3d", "mc3_18")


def _cost(case) -> tuple:
    name, variant = case
    size = 0 if "smoke" in str(variant) else 1 if "demo" in str(variant) else 2
    return size, _shrunk(name, variant).model.name not in SMALL_MODELS


def _representatives():
    """The cheapest config of each (training stage, objective). The stages that start from a
    checkpoint (`finetune`, `linear_probe`, `knn`, `eval`, `features`) run end to end in
    `tests/test_stages.py` and `tests/test_train.py`; here their configs are traced."""
    chosen = {}
    for name, variant in sorted(CASES, key=_cost):
        config = _shrunk(name, variant)
        if config.stage in ("train", "pretrain"):
            chosen.setdefault((config.stage, config.objective.name), (name, variant))
    return sorted(chosen.values(), key=str)


REPRESENTATIVES = _representatives()


def _traced_cases():
    """The first (file, variant) of every other distinct train step."""
    seen = {_step_key(_shrunk(n, v)) for n, v in REPRESENTATIVES}
    cases = []
    for name, variant in CASES:
        key = _step_key(_shrunk(name, variant))
        if key not in seen:
            seen.add(key)
            cases.append((name, variant))
    return cases


TRACED = _traced_cases()


@pytest.mark.parametrize("name, variant", TRACED, ids=[f"{n}:{v}" for n, v in TRACED])
def test_config_traces_its_train_step(name, variant):
    facts = dry_run.plan(_shrunk(name, variant), compile_step=False)
    assert facts["params_encoder"] > 0 and facts["encoder_gflops_per_clip"] > 0


@pytest.mark.parametrize(
    "name, variant", REPRESENTATIVES, ids=[f"{n}:{v}" for n, v in REPRESENTATIVES]
)
def test_stage_runs_end_to_end(name, variant, tmp_path):
    config = _shrunk(name, variant)
    results = main.run(config, str(tmp_path))
    assert results.get("top1", results.get("knn_top1", results.get("feature_dim"))) is not None
    if objectives.get(config.objective.name).pictures is not None:
        picture = tmp_path / "plots" / f"{config.objective.name}.png"
        assert picture.stat().st_size > 0
        # The eval stage draws them again from the checkpoint.
        picture.unlink()
        with config.unlocked():
            config.stage = "eval"
        main.run(config, str(tmp_path))
        assert picture.stat().st_size > 0
