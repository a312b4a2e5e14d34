"""Where a config's data lives: a converted dataset folder, or the built-in demo built on demand."""

from __future__ import annotations

import os

import jax
from jax.experimental import multihost_utils


def default_cache_dir() -> str:
    return os.environ.get("VSSL_JAX_CACHE", os.path.expanduser("~/.cache/vssl_jax"))


# Demo options added after the first release; a run's saved config.json may predate them.
_LATER_DEMO_OPTIONS = {"background": "photo", "motion": "constant"}


def _later_demo_options(demo) -> dict:
    return {key: demo.get(key, default) for key, default in _LATER_DEMO_OPTIONS.items()}


def resolve(data_config) -> str:
    """The shard folder `config.data` names, without building anything."""
    if data_config.builtin == "demo":
        demo = data_config.demo
        name = f"demo-{demo.size}px-{demo.train_per_class}x{demo.val_per_class}-seed{demo.seed}"
        for key, value in _later_demo_options(demo).items():
            if value != _LATER_DEMO_OPTIONS[key]:
                name += f"-{value}"
        return data_config.data_dir or os.path.join(default_cache_dir(), name)
    if data_config.builtin:
        raise ValueError(f"config.data.builtin: unknown dataset '{data_config.builtin}' (demo)")
    if not data_config.data_dir:
        raise ValueError("config.data.data_dir is empty: point it at a data_prep output folder")
    return data_config.data_dir


def prepare(data_config, splits: tuple[str, ...]) -> str:
    """Returns the shard folder for `config.data`, building the demo dataset if it is missing.

    The shards of `splits` are checked against the manifest (present, same sizes): data that
    changed since conversion is an error, not a silently different experiment.
    """
    from data_prep.manifest import verify_shards

    data_dir = resolve(data_config)
    if data_config.builtin == "demo":
        demo = data_config.demo
        if jax.process_index() == 0:
            from data_prep.demo import build_demo_dataset

            build_demo_dataset(
                data_dir,
                train_per_class=demo.train_per_class,
                val_per_class=demo.val_per_class,
                size=demo.size,
                seed=demo.seed,
                **_later_demo_options(demo),
            )
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("demo dataset ready")
    for split in dict.fromkeys(splits):
        verify_shards(data_dir, split)
    return data_dir
