"""Multi-branch training from scratch (the seed "video classification from scratch",
`martinetoering/3D-ResNets-PyTorch-TimeCycle`): one shared 3D ResNet trained at once on

    loss = cross-entropy(encoder.head)                      (supervised classification)
         + binary_class_weight * arrow of time              (`arrow_of_time.py`)
         + timecycle_weight * TimeCycle                     (`timecycle.py`)

with the seed's defaults `binary_class_weight` 2 and `timecycle_weight` 25. The final evaluation
is the encoder's classifier ("accuracy").

Data: the dense clip (`pipeline.TrainClip`), `[batch, T, H, W, 3]`. The classification branch
sees it as it is; the arrow-of-time branch sees it with half the clips reversed (a second
encoder pass: a reversed clip can be another class, e.g. sitting down vs standing up); the
TimeCycle branch tracks through the clip's frames 0, `frame_gap`, ..., `video_len * frame_gap`
(the last is the target). Here `frame_gap` counts *clip* frames: with `data.frame_stride` 1, as
in the seed's 13-frame clips with `videoLen 3, frame_gap 4`, these are source frames too.
The clip must hold them: `num_frames >= video_len * frame_gap + 1`.

BatchNorm: TimeCycle's passes (single frames, lone patches) do not move the running averages,
which evaluation applies to clips; the two clip branches do.

Config keys: `binary_class_weight`, `timecycle_weight`, `label_smoothing` (classification), and
TimeCycle's (`timecycle.CycleSettings`). Metrics: `loss` (the total), `classification_loss`,
`accuracy` (classification top-1), `arrow_of_time_loss`, `arrow_of_time_accuracy`,
`timecycle_loss` and its terms `cycle_loss`, `skip_loss`, `similarity_loss`.
"""

from __future__ import annotations

import jax
from flax import nnx

from vssl_jax.objectives import Objective, arrow_of_time, register, supervised, timecycle


class MultiBranch(nnx.Module):
    """The encoder (with its classifier `encoder.head`), the arrow-of-time head and TimeCycle's
    projection, under the attribute names the two branch functions read."""

    def __init__(self, encoder: nnx.Module, embed_dim: int, *, rngs: nnx.Rngs):
        self.encoder = encoder
        self.arrow_head = arrow_of_time.new_head(encoder, rngs)
        self.cycle_projection = timecycle.new_projection(encoder, embed_dim, rngs)


def build_model(encoder: nnx.Module, config, rngs: nnx.Rngs) -> MultiBranch:
    return MultiBranch(encoder, timecycle.CycleSettings.from_config(config).embed_dim, rngs=rngs)


def cycle_frames(video: jax.Array, settings: timecycle.CycleSettings) -> jax.Array:
    """Clip frames 0, frame_gap, ..., video_len * frame_gap: `[batch, video_len + 1, H, W, C]`."""
    span = settings.video_len * settings.frame_gap + 1
    if video.shape[1] < span:
        raise ValueError(
            f"multibranch: TimeCycle needs clip frames 0..{span - 1} (video_len "
            f"{settings.video_len} x frame_gap {settings.frame_gap}), the clip has "
            f"{video.shape[1]}; raise data.num_frames or lower objective.frame_gap / video_len"
        )
    return video[:, : span : settings.frame_gap]


def loss(model: MultiBranch, batch: dict, *, train: bool, rngs: nnx.Rngs, config):
    """The weighted sum of the three branches on one batch of clips."""
    settings = timecycle.CycleSettings.from_config(config)
    classification, classification_metrics = supervised.classification_loss(
        model.encoder, batch, train=train, rngs=rngs, config=config
    )
    arrow, arrow_accuracy = arrow_of_time.arrow_of_time_branch(
        model, batch["video"], train=train, rngs=rngs
    )
    # TimeCycle encodes single frames and lone patches, whose BatchNorm statistics are not a
    # clip's: its passes normalise with their own batch statistics, but the running averages,
    # which evaluation applies to clips, keep what the two clip branches made of them.
    clip_statistics = nnx.state(model.encoder, nnx.BatchStat).to_pure_dict()
    cycle, cycle_terms = timecycle.timecycle_branch(
        model, cycle_frames(batch["video"], settings), train=train, rngs=rngs, settings=settings
    )
    nnx.update(model.encoder, clip_statistics)
    total = (
        classification
        + config.get("binary_class_weight", 2.0) * arrow
        + config.get("timecycle_weight", 25.0) * cycle
    )
    return total, {
        "loss": total,
        "classification_loss": classification,
        "accuracy": classification_metrics["accuracy"],
        "arrow_of_time_loss": arrow,
        "arrow_of_time_accuracy": arrow_accuracy,
        "timecycle_loss": cycle,
        **cycle_terms,
    }


register("multibranch", Objective(loss, build_model=build_model, final_eval="accuracy"))
