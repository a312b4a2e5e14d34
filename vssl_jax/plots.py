"""Pictures of a run in `workdir/plots/` (and in TensorBoard): curves, confusion matrix, samples.

- `curves.png`: training loss / accuracy and eval accuracy against the step (metrics.jsonl).
- `confusion_matrix.png`: row-normalised, class names on both axes; the figure and font scale
  with the number of classes so 50+ classes stay readable.
- `predictions.png`: a few frames of sample eval videos with the true label, and the prediction
  in green when right, red when wrong.
- `OBJECTIVE.png` (e.g. `videomae.png`), after training with an objective that has `pictures`:
  for a few eval videos, the rows the objective makes of a clip (VideoMAE: original, masked
  input, reconstruction), a few frames each.
"""

from __future__ import annotations

import json
import os

import jax
import matplotlib
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

matplotlib.use("Agg")  # Files only; never a window.
from matplotlib import pyplot as plt  # noqa: E402

from vssl_jax import objectives  # noqa: E402
from vssl_jax.data import pipeline, transforms  # noqa: E402
from vssl_jax.state import normalized  # noqa: E402

PLOTS_DIR = "plots"


def _save(fig, workdir: str, name: str) -> str:
    directory = os.path.join(workdir, PLOTS_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def training_curves(workdir: str) -> str | None:
    """Loss and accuracy against the step, from `metrics.jsonl`; None before any step."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    train = [r for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "eval"]
    if not train:
        return None
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    if "accuracy" in train[0]:
        acc_ax.plot([r["step"] for r in train], [r["accuracy"] for r in train], label="train top-1")
    # A classifier's evals report top1; a pretraining run's, kNN retrieval's knn_top1.
    for key, label in (("top1", "eval top-1"), ("knn_top1", "eval kNN top-1")):
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            acc_ax.plot(*zip(*points, strict=True), "o-", label=label)
    acc_ax.set_xlabel("step")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1)
    acc_ax.legend()
    fig.tight_layout()
    return _save(fig, workdir, "curves.png")


def confusion_matrix(
    workdir: str, labels: np.ndarray, predictions: np.ndarray, label_names: list[str]
) -> str:
    num_classes = len(label_names)
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (labels, predictions), 1)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(6.0, 0.22 * num_classes + 2)
    font = max(4.0, min(10.0, 400 / num_classes))
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(num_classes), label_names, rotation=90, fontsize=font)
    ax.set_yticks(range(num_classes), label_names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if num_classes <= 20:
        for true, pred in zip(*np.nonzero(counts), strict=True):
            ax.text(
                pred,
                true,
                int(counts[true, pred]),
                ha="center",
                va="center",
                fontsize=font,
                color="white" if rates[true, pred] > 0.5 else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.04, label="fraction of the true class")
    ax.set_title(f"confusion matrix ({int(counts.sum())} videos)")
    fig.tight_layout()
    return _save(fig, workdir, "confusion_matrix.png")


def prediction_grid(
    workdir: str,
    outputs: dict[str, np.ndarray],
    label_names: list[str],
    data_dir: str,
    split: str,
    *,
    num_videos: int = 8,
    frames_per_video: int = 4,
) -> str:
    """Frames of the first `num_videos` eval videos, true label and prediction (green/red)."""
    source = pipeline.split_source(data_dir, split)
    chosen = np.linspace(0, len(outputs["index"]) - 1, min(num_videos, len(outputs["index"])))
    fig, axes = plt.subplots(
        len(chosen),
        frames_per_video,
        figsize=(2 * frames_per_video, 2.1 * len(chosen)),
        squeeze=False,
    )
    for row, position in zip(axes, chosen.astype(int), strict=True):
        record = source[int(outputs["index"][position])]
        shown = np.linspace(0, record.num_frames - 1, frames_per_video).astype(int)
        frames = transforms.decode_frames(record.frames, shown, record.path)
        true = int(outputs["label"][position])
        predicted = int(np.argmax(outputs["logits"][position]))
        for ax, frame in zip(row, frames, strict=True):
            ax.imshow(frame)
            ax.axis("off")
        row[0].set_title(
            f"true: {label_names[true]}\npred: {label_names[predicted]}",
            color="green" if predicted == true else "red",
            fontsize=8,
            loc="left",
        )
    fig.tight_layout()
    return _save(fig, workdir, "predictions.png")


def objective_pictures(
    pictures, spec, config, state: dict, mesh, data_dir: str, *, num_videos: int = 4
) -> dict[str, np.ndarray]:
    """An objective's `pictures` of the first test view of the first `num_videos` videos of
    `eval_split`, in pixels `[videos, T, H, W, 3]` in [0, 1] (NaN kept: no pixels). Every process
    runs it (the state may span hosts); each reads the same videos."""
    source = pipeline.split_source(data_dir, config.data.eval_split)
    count = min(num_videos, len(source))
    views = pipeline.EvalClip(source, np.arange(count), pipeline.clip_spec(config.data))
    clips = np.stack([views(i)["video"][0] for i in range(count)])
    replicated = NamedSharding(mesh, PartitionSpec())
    clips = jax.make_array_from_process_local_data(replicated, clips)
    mean = np.asarray(config.data.mean, np.float32)
    std = np.asarray(config.data.std, np.float32)

    names: list[str] = []  # The objective's row order (a dict out of jit comes back sorted).

    def run(state, clips):
        model = nnx.merge(spec.graphdef, state["params"], state["model_state"], copy=True)
        video = normalized({"video": clips}, config)["video"]
        rows = pictures(model, video, jax.random.PRNGKey(config.seed), config.objective)
        names[:] = rows
        return [row.astype(np.float32) * std + mean for row in rows.values()]

    rows = jax.jit(run, out_shardings=replicated)(state, clips)
    return {
        name: np.clip(np.asarray(row.addressable_data(0)), 0, 1)
        for name, row in zip(names, rows, strict=True)
    }


def clip_rows(
    workdir: str, name: str, rows: dict[str, np.ndarray], *, frames_per_clip: int = 4
) -> str:
    """For each video, one row of `frames_per_clip` evenly spread frames per entry of `rows`
    (`[videos, T, H, W, 3]` in [0, 1]; NaN pixels drawn black), named on the left."""
    kinds = list(rows)
    num_videos, num_frames = rows[kinds[0]].shape[:2]
    shown = np.linspace(0, num_frames - 1, min(frames_per_clip, num_frames)).astype(int)
    fig, axes = plt.subplots(
        num_videos * len(kinds),
        len(shown),
        figsize=(1.6 * len(shown) + 1.2, 1.6 * num_videos * len(kinds)),
        squeeze=False,
    )
    for video in range(num_videos):
        for k, kind in enumerate(kinds):
            row = axes[video * len(kinds) + k]
            for ax, frame in zip(row, shown, strict=True):
                ax.imshow(np.nan_to_num(rows[kind][video, frame], nan=0.0))
                ax.set_xticks([])
                ax.set_yticks([])
                if video == 0 and k == 0:
                    ax.set_title(f"frame {frame}", fontsize=8)
            row[0].set_ylabel(f"video {video}\n{kind}", fontsize=8)
    fig.tight_layout()
    return _save(fig, workdir, name)


def _log_images(workdir: str, paths: list[str]) -> None:
    """The pictures at `paths` as TensorBoard images, tagged by file name."""
    from PIL import Image
    from tensorboardX import SummaryWriter

    with SummaryWriter(os.path.join(workdir, "tensorboard")) as writer:
        for path in paths:
            image = np.asarray(Image.open(path).convert("RGB"))
            writer.add_image(f"plots/{os.path.basename(path)[:-4]}", image, dataformats="HWC")


def write_objective_pictures(
    spec, config, state: dict, mesh, data_dir: str, workdir: str
) -> str | None:
    """`plots/OBJECTIVE.png` (and its TensorBoard image) when `config.objective` has pictures;
    every process must call it, process 0 writes. Returns the path (None when there is no
    picture, or on other processes)."""
    pictures = objectives.get(config.objective.name).pictures
    if pictures is None:
        return None
    rows = objective_pictures(pictures, spec, config, state, mesh, data_dir)
    if jax.process_index() != 0:
        return None
    path = clip_rows(workdir, f"{config.objective.name}.png", rows)
    _log_images(workdir, [path])
    return path


def write_eval_plots(
    workdir: str, outputs: dict[str, np.ndarray], label_names: list[str], data_dir: str, config
) -> list[str]:
    """All plots of a finished eval; also logged as TensorBoard images. Returns the paths."""
    if jax.process_index() != 0:
        return []
    paths = [
        training_curves(workdir),
        confusion_matrix(workdir, outputs["label"], outputs["logits"].argmax(axis=1), label_names),
        prediction_grid(workdir, outputs, label_names, data_dir, config.data.eval_split),
    ]
    paths = [p for p in paths if p]
    _log_images(workdir, paths)
    return paths
