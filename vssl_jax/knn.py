"""Nearest-neighbour evaluation of an encoder: retrieval Recall@k and weighted kNN top-1.

Features of every `eval_split` video (the test views averaged, L2-normalised) query those of
every `train_split` video by cosine similarity. Recall@k (the retrieval protocol of VCOP and
CoCLR): the fraction of queries with at least one of their k nearest training videos in the
query's class. kNN top-1 (Wu et al. 2018, instance discrimination): the k nearest neighbours
vote for their class with weight exp(similarity / temperature); the class with most weight wins.
Results go to `workdir/eval_results.json` with keys `recall_at_K`, `knn_top1`, `knn_k`,
`num_examples` (queries), `num_train`, `split`, `step`.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import logging

from vssl_jax import checkpoint, datasets, evaluate, sharding
from vssl_jax.data import pipeline
from vssl_jax.state import initial_state, load_pretrained, make_state_spec


def _normalized(features: np.ndarray) -> np.ndarray:
    features = features.astype(np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def retrieval_results(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    query_features: np.ndarray,
    query_labels: np.ndarray,
    *,
    recall_at=(1, 5, 10, 20, 50),
    k: int = 20,
    temperature: float = 0.07,
) -> dict[str, float]:
    """Recall@K for every K of `recall_at` and the weighted kNN top-1, as fractions."""
    similarity = _normalized(query_features) @ _normalized(train_features).T  # [queries, train]
    # Stable sort: equally similar neighbours keep record order, so results are reproducible.
    order = np.argsort(-similarity, axis=1, kind="stable")
    neighbour_labels = train_labels[order]  # [queries, train]
    same_class = neighbour_labels == query_labels[:, None]
    results = {
        f"recall_at_{r}": float(same_class[:, : min(r, len(train_labels))].any(axis=1).mean())
        for r in recall_at
    }
    k = min(k, len(train_labels))
    top_similarity = np.take_along_axis(similarity, order[:, :k], axis=1)
    weights = np.exp((top_similarity - 1.0) / temperature)  # -1: same ranking, no overflow.
    num_classes = int(max(train_labels.max(), query_labels.max())) + 1
    votes = np.zeros((len(query_labels), num_classes))
    np.add.at(votes, (np.arange(len(query_labels))[:, None], neighbour_labels[:, :k]), weights)
    results["knn_top1"] = float((votes.argmax(axis=1) == query_labels).mean())
    results["knn_k"] = k
    return results


def evaluate_knn(features_fn, config, state: dict, mesh, data_dir: str) -> dict:
    """kNN results of `state`'s encoder; `features_fn` from `evaluate.make_eval_step(...,
    step=evaluate.features_step)`."""
    train = evaluate.run_over_split(
        features_fn, config, state, mesh, data_dir, split=config.data.train_split
    )
    query = evaluate.run_over_split(features_fn, config, state, mesh, data_dir)
    results = retrieval_results(
        train["features"],
        train["label"],
        query["features"],
        query["label"],
        recall_at=tuple(config.knn.recall_at),
        k=config.knn.k,
        temperature=config.knn.temperature,
    )
    results.update(
        num_examples=int(query["label"].size),
        num_train=int(train["label"].size),
        split=config.data.eval_split,
        step=int(jax.device_get(state["step"])),
    )
    logging.info(
        "kNN %s (%d queries, %d train videos): %s",
        results["split"],
        results["num_examples"],
        results["num_train"],
        " | ".join(f"{k} {v:.4f}" for k, v in results.items() if k.startswith(("recall", "knn_t"))),
    )
    return results


def knn_stage(config, workdir: str) -> dict:
    """The `knn` stage: the encoder of `config.init_from` (or, without it, of the newest
    checkpoint in `workdir`), evaluated by nearest neighbours; results in `workdir`."""
    data_dir = datasets.prepare(
        config.data, splits=(config.data.train_split, config.data.eval_split)
    )
    label_names = pipeline.load_label_names(data_dir)
    mesh = sharding.make_mesh(config.mesh)
    spec = make_state_spec(config, len(label_names), mesh)
    if config.init_from:
        state = load_pretrained(initial_state(spec), config.init_from, config.model.name)
    else:
        checkpointer = checkpoint.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
        if checkpointer.latest_step() is None:
            checkpointer.close()
            raise FileNotFoundError(
                f"{workdir}: no checkpoint; the knn stage needs config.init_from=PRETRAIN_WORKDIR"
            )
        state = checkpointer.restore(spec.abstract)
        checkpointer.close()
    features_fn = evaluate.make_eval_step(spec, config, mesh, step=evaluate.features_step)
    results = evaluate_knn(features_fn, config, state, mesh, data_dir)
    evaluate.write_results(workdir, results)
    return results
