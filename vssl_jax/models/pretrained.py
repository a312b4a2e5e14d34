"""Pretrained weights on disk: an Orbax checkpoint of a model's arrays, found by parameter path.

Layout: `{"params": {path: array}, "model_state": {path: array}}`, where `path` joins the module
path with dots (`blocks.0.conv1.kernel`, `stem_bn.mean`) and `model_state` holds the BatchNorm
statistics, matching the train state's `params` / `model_state` split. Flat string keys keep the
checkpoint independent of how a model nests its lists. Written by
`python -m vssl_jax.tools.import_torch`; read by `load_into` (fine-tuning from it).
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx


def flat_arrays(state: nnx.State) -> dict[str, np.ndarray]:
    """{"blocks.0.conv1.kernel": array, ...} of an `nnx.State`."""
    return {
        ".".join(str(k) for k in path): np.asarray(variable.get_value())
        for path, variable in nnx.to_flat_state(state)
    }


def save(model: nnx.Module, directory: str) -> None:
    """Writes `model`'s parameters and BatchNorm statistics to a new Orbax checkpoint."""
    _, params, rest = nnx.split(model, nnx.Param, ...)
    tree = {"params": flat_arrays(params), "model_state": flat_arrays(rest)}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.abspath(directory), tree)


def restore(directory: str) -> dict[str, dict[str, np.ndarray]]:
    path = os.path.abspath(directory)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{directory}: no pretrained checkpoint there")
    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.restore(path)
    return {group: {k: np.asarray(v) for k, v in tree[group].items()} for group in tree}


def load_into(state: nnx.State, arrays: dict[str, np.ndarray]) -> tuple[nnx.State, list[str]]:
    """`state` with every entry that `arrays` has in the same shape replaced (placed like the
    value it replaces). Returns the new state and the paths left as they were (missing from
    `arrays`, or of another shape, like a classifier for another number of classes)."""
    kept, leaves = [], []
    for path, variable in nnx.to_flat_state(state):
        key = ".".join(str(k) for k in path)
        old = variable.get_value()
        new = arrays.get(key)
        if new is None or tuple(new.shape) != tuple(old.shape):
            kept.append(key)
            leaves.append((path, variable))
            continue
        value = np.asarray(new, dtype=old.dtype)
        if isinstance(old, jax.Array):
            value = jax.device_put(value, old.sharding)
        leaves.append((path, variable.replace(value)))
    return nnx.from_flat_state(leaves), kept
