"""Evaluation: top-1, top-5 and mean class accuracy over a whole split, and the `eval` stage.

`workdir/eval_results.json` keys (read by other tools; keep them): `top1`, `top5`,
`mean_class_accuracy` (fractions in [0, 1]), `num_classes`, `num_examples`, `step`, plus
`per_class_accuracy` ({class name: fraction}) and `split`.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from vssl_jax import checkpoint, datasets, sharding
from vssl_jax.data import pipeline
from vssl_jax.state import make_state_spec, normalized

RESULTS_FILE = "eval_results.json"


def eval_step(state: dict, batch: dict, *, spec, config) -> dict:
    """Top-k predictions of a batch: {"top_k": int32 [batch, k], "label", "mask"}."""
    model = nnx.merge(spec.graphdef, state["params"], state["model_state"], copy=True)
    logits = model(normalized(batch, config)["video"], train=False)  # [batch, num_classes]
    _, top_k = jax.lax.top_k(logits, min(5, logits.shape[-1]))
    return {"top_k": top_k, "label": batch["label"], "mask": batch["mask"]}


def make_eval_step(spec, config, mesh):
    """`eval_step` jitted for the mesh; build once per run, call for every eval."""
    batch_sharding = sharding.batch_sharding(mesh)
    return jax.jit(
        functools.partial(eval_step, spec=spec, config=config),
        in_shardings=(spec.shardings, batch_sharding),
        out_shardings=batch_sharding,
    )


def accuracy_results(
    top_k: np.ndarray, labels: np.ndarray, label_names: list[str]
) -> dict[str, object]:
    """Accuracies from top-k predictions [num_examples, k] and labels [num_examples]."""
    top1 = top_k[:, 0] == labels
    top5 = (top_k[:, :5] == labels[:, None]).any(axis=1)
    per_class = {
        name: float(top1[labels == index].mean())
        for index, name in enumerate(label_names)
        if (labels == index).any()
    }
    return {
        "top1": float(top1.mean()),
        "top5": float(top5.mean()),
        "mean_class_accuracy": float(np.mean(list(per_class.values()))),
        "num_classes": len(label_names),
        "num_examples": int(labels.size),
        "per_class_accuracy": per_class,
    }


def evaluate(step_fn, config, state: dict, mesh, data_dir: str, label_names: list[str]) -> dict:
    """Centre-clip, centre-crop accuracy of `state` on `config.data.eval_split`."""
    dataset, num_batches = pipeline.eval_dataset(
        data_dir,
        config.data.eval_split,
        pipeline.clip_spec(config.data),
        global_batch_size=config.eval_batch_size,
        num_workers=config.data.num_workers,
    )
    batch_sharding = sharding.batch_sharding(mesh)
    outputs = []
    for local_batch, _ in zip(dataset, range(num_batches), strict=False):
        out = step_fn(state, pipeline.global_batch(local_batch, batch_sharding))
        outputs.append(multihost_utils.process_allgather(out, tiled=True))
    keep = np.concatenate([o["mask"] for o in outputs]) > 0
    top_k = np.concatenate([o["top_k"] for o in outputs])[keep]
    labels = np.concatenate([o["label"] for o in outputs])[keep]
    results = accuracy_results(top_k, labels, label_names)
    results["step"] = int(jax.device_get(state["step"]))
    results["split"] = config.data.eval_split
    logging.info(
        "eval %s at step %d: top1 %.4f | top5 %.4f | mean class accuracy %.4f (%d videos)",
        results["split"],
        results["step"],
        results["top1"],
        results["top5"],
        results["mean_class_accuracy"],
        results["num_examples"],
    )
    return results


def scalar_results(results: dict) -> dict[str, float]:
    return {k: results[k] for k in ("top1", "top5", "mean_class_accuracy")}


def write_results(workdir: str, results: dict) -> str:
    path = os.path.join(workdir, RESULTS_FILE)
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
    return path


def evaluate_checkpoint(config, workdir: str) -> dict:
    """The `eval` stage: restore the latest checkpoint in `workdir` and evaluate it."""
    data_dir = datasets.prepare(config.data)
    label_names = pipeline.load_label_names(data_dir)
    mesh = sharding.make_mesh(config.mesh)
    spec = make_state_spec(config, len(label_names), mesh)
    checkpointer = checkpoint.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    state = checkpointer.restore(spec.abstract)
    checkpointer.close()
    results = evaluate(
        make_eval_step(spec, config, mesh), config, state, mesh, data_dir, label_names
    )
    write_results(workdir, results)
    return results
