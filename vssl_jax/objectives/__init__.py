"""Training objectives, found by name.

An `Objective` bundles what a method needs beyond the encoder:
- `loss(model, batch, *, train, rngs, config) -> (loss, metrics)`: a pure function of the model
  and a batch dict (`video` normalised float, layout set by the objective's `train_example`;
  `label` int32 [batch]; optional `mask` float [batch]). `rngs` has the streams `dropout` and
  `augment` (on-device randomness: reversal, patch positions). `metrics` are scalar arrays.
- `build_model(encoder, config, rngs) -> nnx.Module`: the encoder (a model of the zoo) wrapped
  with the method's heads; the wrapper keeps the encoder as its attribute `encoder`, so a
  checkpoint's `params/encoder/...` is what fine-tuning restores. Supervised objectives return
  the encoder itself.
- `train_example(spec, config) -> callable(VideoRecord, np.random.Generator) -> dict`: the
  method's clip sampler and augmentations, run by grain on the host (must pickle: keep plain
  values from `config`, not the ConfigDict).
- `pictures(model, video, key, config) -> {row name: clips}` (optional): what the method makes of
  normalised clips `[batch, T, H, W, 3]`, as clips of the same shape and units (NaN where there
  are no pixels), drawn after training as `workdir/plots/OBJECTIVE.png` (VideoMAE: the masked
  input and the reconstruction).
`config` is always `config.objective`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from flax import nnx

from vssl_jax.data import pipeline
from vssl_jax.objectives import supervised


def _encoder_only(encoder: nnx.Module, config, rngs: nnx.Rngs) -> nnx.Module:
    return encoder


def _dense_clip(spec: pipeline.ClipSpec, config) -> pipeline.TrainClip:
    return pipeline.TrainClip(spec)


@dataclasses.dataclass(frozen=True)
class Objective:
    loss: Callable
    build_model: Callable = _encoder_only
    train_example: Callable = _dense_clip
    # What the final evaluation of a training run reports: "accuracy" (the encoder's classifier
    # on eval_split) or "knn" (retrieval with the encoder's features, for pretraining).
    final_eval: str = "accuracy"
    # True when the loss contrasts each example with the rest of the batch (InfoNCE with in-batch
    # negatives): gradient accumulation would then change the objective, so it is refused.
    negatives_from_batch: bool = False
    pictures: Callable | None = None


_OBJECTIVES: dict[str, Objective] = {
    "supervised": Objective(supervised.classification_loss),
    "linear_probe": Objective(supervised.linear_probe_loss),
}


def register(name: str, objective: Objective) -> None:
    if name in _OBJECTIVES:
        raise ValueError(f"objective '{name}' is registered twice")
    _OBJECTIVES[name] = objective


def get(name: str) -> Objective:
    _import_families()
    try:
        return _OBJECTIVES[name]
    except KeyError:
        raise ValueError(
            f"unknown objective '{name}'; registered objectives: {', '.join(sorted(_OBJECTIVES))}"
        ) from None


def names() -> list[str]:
    _import_families()
    return sorted(_OBJECTIVES)


def encoder_of(model: nnx.Module) -> nnx.Module:
    """The zoo model inside an objective's wrapper (or the model itself)."""
    return getattr(model, "encoder", model)


def _import_families() -> None:
    """Importing a family module registers its objectives (each file calls `register`)."""
    import importlib

    for family in _FAMILIES:
        importlib.import_module(f"vssl_jax.objectives.{family}")


# One module per method family; each registers its objectives on import.
_FAMILIES = ("arrow_of_time", "dpc", "moco", "multibranch", "timecycle", "videomae", "vtdl")
