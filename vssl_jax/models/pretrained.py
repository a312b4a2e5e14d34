"""Pretrained weights on disk: an Orbax checkpoint of a model's arrays, found by parameter path.

Layout: `{"params": {path: array}, "model_state": {path: array}}`, where `path` joins the module
path with dots (`blocks.0.conv1.kernel`, `stem_bn.mean`) and `model_state` holds the BatchNorm
statistics, matching the train state's `params` / `model_state` split. Flat string keys keep the
checkpoint independent of how a model nests its lists. Written by
`python -m vssl_jax.tools.import_torch`; read by `load_into` (fine-tuning from it).

`restore_encoder` also reads a training workdir (its newest checkpoint), taking the encoder of a
self-supervised model (`params/encoder/...`) or the whole model of a supervised one.
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


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of a restored train state -> {"blocks.0.conv1.kernel": array}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):  # A module may have a submodule named `value` (attention).
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:  # A leaf under NNX's variable wrapper `value` is named by its variable.
            flat[prefix.rstrip(".") if key == "value" else prefix + key] = np.asarray(value)
    return flat


def _restore_workdir(directory: str) -> dict[str, dict[str, np.ndarray]]:
    """`params` and `model_state` of the newest readable checkpoint of a training workdir."""
    manager = ocp.CheckpointManager(os.path.join(os.path.abspath(directory), "checkpoints"))
    steps = sorted(manager.all_steps(), reverse=True)
    manager.close()
    if not steps:
        raise FileNotFoundError(f"{directory}: a workdir without checkpoints (did its run save?)")
    failures = []
    for step in steps:
        path = os.path.join(os.path.abspath(directory), "checkpoints", str(step), "state")
        try:
            with ocp.StandardCheckpointer() as checkpointer:
                tree = checkpointer.restore(path)
        except Exception as e:  # Unreadable (damaged) checkpoint: the one before it will do.
            failures.append(f"{path}: {' '.join(str(e).split())[:200]}")
            continue
        return {group: _flatten(tree[group]) for group in ("params", "model_state")}
    raise ValueError(f"no readable checkpoint; newest failure: {failures[0]}")


def restore_encoder(directory: str) -> dict[str, dict[str, np.ndarray]]:
    """The encoder's arrays from `directory`: a training workdir (its newest checkpoint; the
    `encoder` of a self-supervised model, else the whole model) or an `import_torch` folder."""
    if os.path.isdir(os.path.join(directory, "checkpoints")):
        arrays = _restore_workdir(directory)
    else:
        arrays = restore(directory)
    if any(key.startswith("encoder.") for key in arrays["params"]):
        arrays = {
            group: {k[len("encoder.") :]: v for k, v in flat.items() if k.startswith("encoder.")}
            for group, flat in arrays.items()
        }
    return arrays


def check_fits(state: nnx.State, arrays: dict[str, np.ndarray], source: str, model: str) -> None:
    """Raises a one-line error when `arrays` share no path with `state`, or when an array other
    than the classifier (`head.*`, sized by the number of classes) has another shape."""
    shapes = {
        ".".join(str(k) for k in path): tuple(variable.get_value().shape)
        for path, variable in nnx.to_flat_state(state)
    }
    common = [key for key in shapes if key in arrays]
    if shapes and not [key for key in common if not key.startswith("head.")]:
        raise ValueError(
            f"init_from {source}: none of its {len(arrays)} arrays belong to model '{model}' "
            f"(it holds e.g. {', '.join(sorted(arrays)[:3]) or 'nothing'}): another model?"
        )
    wrong = [
        f"{key} {tuple(arrays[key].shape)} vs {shapes[key]}"
        for key in common
        if not key.startswith("head.") and tuple(arrays[key].shape) != shapes[key]
    ]
    if wrong:
        raise ValueError(
            f"init_from {source}: {len(wrong)} arrays do not fit model '{model}' (checkpoint vs "
            f"model shape): {'; '.join(wrong[:8])}{' ...' if len(wrong) > 8 else ''}"
        )


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
