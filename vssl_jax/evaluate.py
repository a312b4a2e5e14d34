"""Evaluation over a whole split: multi-view accuracy, the `eval` and `features` stages.

Every video is seen as `num_test_clips` x `num_test_crops` views whose logits (or features) are
averaged. `workdir/eval_results.json` keys (read by other tools; keep them): `top1`, `top5`,
`mean_class_accuracy` (fractions in [0, 1]), `num_classes`, `num_examples`, `step`, plus
`per_class_accuracy` ({class name: fraction}), `split` and `num_views`.
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

from vssl_jax import checkpoint, datasets, objectives, sharding
from vssl_jax.data import pipeline
from vssl_jax.state import make_state_spec, normalized

RESULTS_FILE = "eval_results.json"


def _views_model(state: dict, batch: dict, spec, config):
    """(encoder, normalised views `[batch * views, T, H, W, 3]`, batch, views)."""
    model = nnx.merge(spec.graphdef, state["params"], state["model_state"], copy=True)
    model = objectives.encoder_of(model)
    video = normalized(batch, config)["video"]  # [batch, views, T, H, W, 3]
    batch_size, views = video.shape[:2]
    return model, video.reshape(batch_size * views, *video.shape[2:]), batch_size, views


def _passthrough(batch: dict) -> dict:
    return {"label": batch["label"], "mask": batch["mask"], "index": batch["index"]}


def eval_step(state: dict, batch: dict, *, spec, config) -> dict:
    """View-averaged logits `[batch, num_classes]` with the batch's label, mask and index."""
    model, video, batch_size, views = _views_model(state, batch, spec, config)
    logits = model(video, train=False).reshape(batch_size, views, -1).mean(axis=1)
    return {"logits": logits, **_passthrough(batch)}


def features_step(state: dict, batch: dict, *, spec, config) -> dict:
    """View-averaged pooled features `[batch, feature_dim]` (the encoder's representation)."""
    model, video, batch_size, views = _views_model(state, batch, spec, config)
    features = model.features(video, train=False).astype(np.float32)
    return {"features": features.reshape(batch_size, views, -1).mean(axis=1), **_passthrough(batch)}


def make_eval_step(spec, config, mesh, step=eval_step):
    """`step` jitted for the mesh; build once per run, call for every eval."""
    batch_sharding = sharding.batch_sharding(mesh)
    return jax.jit(
        functools.partial(step, spec=spec, config=config),
        in_shardings=(spec.shardings, batch_sharding),
        out_shardings=batch_sharding,
    )


def run_over_split(
    step_fn, config, state: dict, mesh, data_dir: str, split: str | None = None
) -> dict[str, np.ndarray]:
    """Runs `step_fn` over every video of `split` (default `config.data.eval_split`) once.

    Returns host arrays of the real (unpadded) videos, sorted by record index.
    """
    dataset, num_batches = pipeline.eval_dataset(
        data_dir,
        split or config.data.eval_split,
        pipeline.clip_spec(config.data),
        global_batch_size=config.eval_batch_size,
        num_workers=config.data.num_workers,
    )
    batch_sharding = sharding.batch_sharding(mesh)
    outputs = []
    iterator = iter(dataset)
    try:
        for local_batch, _ in zip(iterator, range(num_batches), strict=False):
            out = step_fn(state, pipeline.global_batch(local_batch, batch_sharding))
            outputs.append(multihost_utils.process_allgather(out, tiled=True))
    finally:
        iterator.close()  # Stops grain's workers now rather than at exit.
    merged = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    keep = merged.pop("mask") > 0
    order = np.argsort(merged["index"][keep], kind="stable")
    return {k: v[keep][order] for k, v in merged.items()}


def accuracy_results(
    logits: np.ndarray, labels: np.ndarray, label_names: list[str]
) -> dict[str, object]:
    """Top-1, top-5, mean class and per-class accuracy from `[num_videos, num_classes]` logits."""
    top_k = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    top1 = top_k[:, 0] == labels
    top5 = (top_k == labels[:, None]).any(axis=1)
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


def evaluate(
    step_fn, config, state: dict, mesh, data_dir: str, label_names: list[str]
) -> tuple[dict, dict[str, np.ndarray]]:
    """Multi-view accuracy of `state` on `config.data.eval_split`.

    Returns (results, per-video outputs: `logits`, `label`, `index`).
    """
    outputs = run_over_split(step_fn, config, state, mesh, data_dir)
    results = accuracy_results(outputs["logits"], outputs["label"], label_names)
    results["step"] = int(jax.device_get(state["step"]))
    results["split"] = config.data.eval_split
    results["num_views"] = config.data.num_test_clips * config.data.num_test_crops
    logging.info(
        "eval %s at step %d (%d views per video): top1 %.4f | top5 %.4f | mean class accuracy "
        "%.4f (%d videos)",
        results["split"],
        results["step"],
        results["num_views"],
        results["top1"],
        results["top5"],
        results["mean_class_accuracy"],
        results["num_examples"],
    )
    return results, outputs


def scalar_results(results: dict) -> dict[str, float]:
    """The headline numbers of accuracy or kNN results, for the metric writer."""
    names = ("top1", "top5", "mean_class_accuracy", "knn_top1")
    return {k: v for k, v in results.items() if k in names or k.startswith("recall_at_")}


def write_results(workdir: str, results: dict) -> str:
    path = os.path.join(workdir, RESULTS_FILE)
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
    return path


def restore_latest(config, workdir: str, *, build_data: bool = True):
    """(state of the latest checkpoint in `workdir`, spec, mesh, data_dir, label_names).

    `build_data=False` only locates the dataset (its label map and manifest) and builds nothing.
    """
    if build_data:
        data_dir = datasets.prepare(config.data, splits=(config.data.eval_split,))
    else:
        data_dir = datasets.resolve(config.data)
    label_names = pipeline.load_label_names(data_dir)
    mesh = sharding.make_mesh(config.mesh)
    spec = make_state_spec(config, len(label_names), mesh)
    checkpointer = checkpoint.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    state = checkpointer.restore(spec.abstract)
    checkpointer.close()
    return state, spec, mesh, data_dir, label_names


def evaluate_checkpoint(config, workdir: str) -> dict:
    """The `eval` stage: restore the latest checkpoint in `workdir`, evaluate, write plots (and
    the objective's pictures, so a pretraining run's can be drawn again from its checkpoint)."""
    from vssl_jax import plots

    state, spec, mesh, data_dir, label_names = restore_latest(config, workdir)
    results, outputs = evaluate(
        make_eval_step(spec, config, mesh), config, state, mesh, data_dir, label_names
    )
    write_results(workdir, results)
    plots.write_eval_plots(workdir, outputs, label_names, data_dir, config)
    plots.write_objective_pictures(spec, config, state, mesh, data_dir, workdir)
    return results


def extract_features(config, workdir: str) -> dict:
    """The `features` stage: `features.npy` `[num_videos, feature_dim]`, `labels.npy` and
    `paths.txt` of `config.data.eval_split`, in record order, from the latest checkpoint."""
    state, spec, mesh, data_dir, _ = restore_latest(config, workdir)
    step_fn = make_eval_step(spec, config, mesh, step=features_step)
    outputs = run_over_split(step_fn, config, state, mesh, data_dir)
    source = pipeline.split_source(data_dir, config.data.eval_split)
    paths = [source[int(i)].path for i in outputs["index"]]
    if jax.process_index() == 0:
        np.save(os.path.join(workdir, "features.npy"), outputs["features"])
        np.save(os.path.join(workdir, "labels.npy"), outputs["label"])
        with open(os.path.join(workdir, "paths.txt"), "w") as f:
            f.writelines(f"{p}\n" for p in paths)
    logging.info(
        "features of %d %s videos (dim %d) written to %s",
        len(paths),
        config.data.eval_split,
        outputs["features"].shape[1],
        workdir,
    )
    return {
        "split": config.data.eval_split,
        "num_examples": len(paths),
        "feature_dim": int(outputs["features"].shape[1]),
    }
