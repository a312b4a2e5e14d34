"""Frame model vs video model, on the same data and budget:

    python -m vssl_jax.compare --config=configs/demo.py --workdir=W \
        [--models=per_frame_resnet18,r3d_18]

Trains each model with the same config but `model.name` into `W/<model>` (a model whose workdir
already holds `eval_results.json` is not trained again), then writes `W/report.md` (accuracy,
mean class accuracy, parameters, training time) and `W/comparison.png`.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
from absl import app, flags

# --config and --workdir (here: the parent of one workdir per model) are main's flags.
from vssl_jax import main as vssl_main

_MODELS = flags.DEFINE_list(
    "models", ["per_frame_resnet18", "r3d_18"], "Registered model names to compare."
)

TIMING_FILE = "train_seconds.json"


def parameter_count(config, num_classes: int) -> int:
    from flax import nnx

    from vssl_jax import models

    abstract = nnx.eval_shape(lambda: models.create(config.model, num_classes, seed=0))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def train_or_load(config, workdir: str) -> dict:
    """The run's eval results plus its training wall time (trains it when not done yet)."""
    results_path = os.path.join(workdir, "eval_results.json")
    timing_path = os.path.join(workdir, TIMING_FILE)
    if not os.path.exists(results_path):
        start = time.perf_counter()
        vssl_main.run(config, workdir)
        with open(timing_path, "w") as f:
            json.dump({"train_seconds": time.perf_counter() - start}, f)
    with open(results_path) as f:
        results = json.load(f)
    if os.path.exists(timing_path):
        with open(timing_path) as f:
            results.update(json.load(f))
    return results


def compare(config, workdir: str, model_names: list[str]) -> list[dict]:
    """Trains (or loads) every model; writes report.md and comparison.png into `workdir`."""
    rows = []
    for name in model_names:
        model_config = config.copy_and_resolve_references()
        model_config.unlock()
        model_config.model.name = name
        model_config.lock()
        results = train_or_load(model_config, os.path.join(workdir, name))
        rows.append(
            {
                "model": name,
                "top1": results["top1"],
                "mean_class_accuracy": results["mean_class_accuracy"],
                "params": parameter_count(model_config, results["num_classes"]),
                "train_seconds": results.get("train_seconds"),
                "num_examples": results["num_examples"],
                "split": results["split"],
            }
        )
    write_report(workdir, rows, config)
    return rows


def write_report(workdir: str, rows: list[dict], config) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    best = max(rows, key=lambda r: r["top1"])
    lines = [
        "# Frame model vs video model",
        "",
        f"Same data (`{rows[0]['split']}` split, {rows[0]['num_examples']} videos), same config "
        f"and budget ({config.num_train_steps} steps of batch {config.batch_size}), "
        f"{config.data.num_frames}-frame clips.",
        "",
        "| model | top-1 | mean class accuracy | parameters | training time |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        seconds = r["train_seconds"]
        duration = f"{seconds:.0f} s" if seconds is not None else "n/a (trained elsewhere)"
        lines.append(
            f"| {r['model']} | {r['top1']:.3f} | {r['mean_class_accuracy']:.3f} | "
            f"{r['params'] / 1e6:.2f} M | {duration} |"
        )
    others = [r for r in rows if r is not best]
    if others:
        runner_up = max(others, key=lambda r: r["top1"])
        lines += [
            "",
            f"**{best['model']}** is best: top-1 {best['top1']:.3f}, "
            f"{100 * (best['top1'] - runner_up['top1']):+.1f} points over {runner_up['model']}.",
        ]
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(2.2 * len(rows) + 2, 4))
    positions = range(len(rows))
    ax.bar([p - 0.2 for p in positions], [r["top1"] for r in rows], 0.4, label="top-1")
    ax.bar(
        [p + 0.2 for p in positions],
        [r["mean_class_accuracy"] for r in rows],
        0.4,
        label="mean class accuracy",
    )
    ax.set_xticks(list(positions), [r["model"] for r in rows])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "comparison.png"), dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> None:
    del argv
    vssl_main.configure_logging()
    workdir = vssl_main.WORKDIR.value
    compare(vssl_main.CONFIG.value, workdir, _MODELS.value)
    with open(os.path.join(workdir, "report.md")) as f:
        print(f.read())


if __name__ == "__main__":
    app.run(main, flags_parser=vssl_main.parse_flags)
