"""VTDL: video-based temporal-discriminative learning (Wang, Lin, Ma & Yuen 2020, arXiv 2008.02129;
seed `FingerRec/Self-Supervised-Temporal-Discriminative-Representation-Learning-for-Video-Action-
Recognition`, `src/train_temporal_dis.py`): objective `vtdl`.

What the seed runs (`--softmax --moco`, the scripts in `src/scripts/TemporalDis/`):
- A temporal triplet per video (`data/dataset.py::get_moco_items`): anchor and positive are the
  same frames (one random start), each through its own random spatial transform; the negative
  is a clip of the same video at another start (redrawn start; when it lies fewer than 2 frames
  from the anchor's, moved by a third of the video).
- Networks: the query encoder embeds anchor and negative (a second forward pass, with
  gradient); a momentum copy (alpha 0.999) embeds the positive. The seed's heads are one linear
  layer to 128-d followed by L2 normalisation (I3D's `id_head`).
- Loss (`NCE/NCEAverage.py::MemoryMoCo`, `NCESoftmaxLoss`): softmax cross-entropy over
  [q.k+, q.queue (nce_k keys), q.n] / 0.07, target column 0; the batch's keys then overwrite the
  queue's oldest rows. An InfoNCE with a MoCo queue, not a memory-bank NCE or a triplet loss (the
  seed also computes a triplet margin loss but leaves it out of the loss it optimises).
- TCA, "temporal consistent augmentation" (`TC/gen_positive.py`: `SpatialMixup(0.1,
  version=2)`, which the seed's `consistency_regularization.md` names "TCA/[Intra-video
  Mixup]"): every frame of the anchor becomes (1 - w) x_t + w x_k for one random frame k of the
  same clip and w ~ U(0, 0.1), so every time derivative of the clip is only scaled by (1 - w)
  (the paper's definition: time derivatives invariant up to a constant).
- Basic augmentation (`data/config.py::augmentation_config`): random rotation within +-10
  degrees, random crop, colour jitter (brightness 0.5, contrast 0.5, saturation 0.25, hue 0.5),
  one draw per clip for all its frames.

The paper's ablation (seed README: UCF101 / HMDB51 finetune 60.3/22.6, +BA 63.3/26.2, +temporal
discriminative 72.7/41.2, +TCA 82.3/52.9) adds three switches to a MoCo-style baseline, one
at a time, each row keeping the previous ones; here they are keys of `config.objective`:
- `basic_augment` (BA): rotation and colour jitter as above. BA is read as "basic
  augmentation": the paper's text is not reachable from here and the seed's code never names
  BA, but its pipeline has exactly two augmentation stages, the basic transforms of every clip
  and the intra-video mixup of the anchor, and the second is TCA by the seed's own naming. So
  adding a static frame of the video to every frame (what later work calls background
  augmentation or erasing) is TCA here, not BA. Without BA a clip is only randomly cropped.
- `temporal_negatives` (temporal discriminative): the third view and its logit.
- `temporal_consistency_augment` (TCA): the intra-video mixup of the anchor.
The baseline row (all three off) is MoCo with same-time views and random crops.

Keys of `config.objective` (defaults = the seed's full method): embedding_dim (128),
head_layers (1: the seed's linear head; 2 gives MoCo v2's MLP), queue_size (16384, the seed's
default `nce_k`; its scripts use 5000 UCF101, 3569 HMDB51, 12500 Kinetics), momentum (0.999),
temperature (0.07), basic_augment (True), rotation_degrees (10), color_jitter ((0.5, 0.5, 0.25,
0.5)), temporal_negatives (True), negative_min_gap (2), temporal_consistency_augment (True),
tca_max_weight (0.1). The examples' `video` is uint8 `[3, T, crop, crop, 3]` (anchor, positive,
temporal negative) or `[2, ...]` without temporal negatives.

Deviations from the seed, each for a reason:
- The mixup weight is drawn per clip; the seed draws one w per batch (on the device, after
  normalisation). Per clip is what a per-example host pipeline can do, with the same
  distribution of w; mixing uint8 pixels before normalisation is the same affine blend.
- Colour jitter applies all four operations in a random order (torchvision's `ColorJitter`);
  the seed's clip version loops `for func in transforms: out = func(img)`, so only the last
  operation of its shuffled list takes effect. Hue turns colours about the grey axis and the
  contrast mean is the clip's (`video_augment.color_jitter`).
- The negative start is uniform over the starts at least `negative_min_gap` frames away; only
  when there is none does it move by a third of the video (the seed redraws once and moves).
- Crops are `data.crop_size` windows of the stored frames (the seed resizes frames to 256 and
  crops 224, which data_prep's short side plays); rotation is about the frame's centre before
  the crop, nearest-neighbour with black corners (PIL's defaults, as the seed).
- BatchNorm statistics are global over the batch (no shuffle BN), as `moco`'s docstring
  explains; the anchor and the negatives are two passes of the query encoder, each with its own
  statistics, as in the seed.
- The seed pretrains I3D (1024-d), R3D or R(2+1)D; any zoo encoder works here (C3D: 512-d).
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from vssl_jax.data import records, sampling, transforms, video_augment
from vssl_jax.data.pipeline import ClipSpec
from vssl_jax.objectives import Objective, register
from vssl_jax.objectives.moco import (
    MomentumContrast,
    check_views,
    clip_indices,
    momentum_contrast_loss,
    other_start,
)

# ---------------------------------------------------------------- Views


class VTDLClips:
    """Record bytes -> {'video': uint8 [3 or 2, T, crop, crop, 3], 'label': int32}: anchor,
    positive (the anchor's frames, augmented anew) and, with temporal negatives, a clip of the
    same video at another time."""

    def __init__(
        self,
        spec: ClipSpec,
        *,
        basic_augment: bool,
        rotation_degrees: float,
        color_jitter: tuple[float, float, float, float],
        temporal_negatives: bool,
        negative_min_gap: int,
        temporal_consistency_augment: bool,
        tca_max_weight: float,
    ):
        self.spec = spec
        self.basic_augment = basic_augment
        self.rotation_degrees = rotation_degrees
        self.color_jitter = tuple(color_jitter)
        self.temporal_negatives = temporal_negatives
        self.negative_min_gap = negative_min_gap
        self.temporal_consistency_augment = temporal_consistency_augment
        self.tca_max_weight = tca_max_weight

    def _augment(self, clip: np.ndarray, rng: np.random.Generator, source: str) -> np.ndarray:
        size = self.spec.crop_size
        if not self.basic_augment:
            clip = transforms.random_crop(clip, size, rng, source)
        else:
            height, width = clip.shape[1:3]
            if height < size or width < size:
                raise transforms.ClipError(
                    f"{source}: frames are {height}x{width}, smaller than crop_size {size}; "
                    "convert with a larger --short-side or lower config.data.crop_size"
                )
            degrees = rng.uniform(-self.rotation_degrees, self.rotation_degrees)
            top = int(rng.integers(0, height - size + 1))
            left = int(rng.integers(0, width - size + 1))
            clip = video_augment.rotate_crop(clip, degrees, top, left, size)
            clip = video_augment.color_jitter(
                clip, video_augment.sample_jitter(rng, *self.color_jitter)
            )
        if self.spec.flip:
            clip = transforms.random_flip(clip, rng)
        return clip

    def __call__(
        self, record: records.VideoRecord, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        length, stride = self.spec.num_frames, self.spec.frame_stride
        indices = [sampling.random_clip_indices(record.num_frames, length, stride, rng)]
        if self.temporal_negatives:
            start = other_start(
                record.num_frames, length, stride, int(indices[0][0]), self.negative_min_gap, rng
            )
            indices.append(clip_indices(start, record.num_frames, length, stride))
        frames = transforms.decode_frames(record.frames, np.concatenate(indices), record.path)
        # Anchor and positive: the same frames, each with its own spatial draw.
        views = [self._augment(frames[:length], rng, record.path) for _ in range(2)]
        if self.temporal_negatives:
            views.append(self._augment(frames[length:], rng, record.path))
        if self.temporal_consistency_augment:
            views[0] = video_augment.mix_static_frame(
                views[0], int(rng.integers(length)), rng.uniform(0.0, self.tca_max_weight)
            )
        return {"video": np.stack(views), "label": np.int32(record.label)}


def vtdl_clips(spec: ClipSpec, config) -> VTDLClips:
    return VTDLClips(
        spec,
        basic_augment=bool(config.get("basic_augment", True)),
        rotation_degrees=float(config.get("rotation_degrees", 10.0)),
        color_jitter=tuple(config.get("color_jitter", (0.5, 0.5, 0.25, 0.5))),
        temporal_negatives=bool(config.get("temporal_negatives", True)),
        negative_min_gap=int(config.get("negative_min_gap", 2)),
        temporal_consistency_augment=bool(config.get("temporal_consistency_augment", True)),
        tca_max_weight=float(config.get("tca_max_weight", 0.1)),
    )


# ---------------------------------------------------------------- Model and loss


def build_vtdl(encoder: nnx.Module, config, rngs: nnx.Rngs) -> MomentumContrast:
    return MomentumContrast(
        encoder,
        embedding_dim=config.get("embedding_dim", 128),
        head_layers=config.get("head_layers", 1),
        queue_size=config.get("queue_size", 16384),
        queue_init="uniform",
        rngs=rngs,
    )


def vtdl_loss(
    model: MomentumContrast, batch: dict, *, train: bool, rngs: nnx.Rngs, config
) -> tuple[jax.Array, dict]:
    """`batch['video']` [batch, 3, T, H, W, 3]: anchors (queries), positives (keys), temporal
    negatives; [batch, 2, ...] without `temporal_negatives`."""
    video = batch["video"]
    temporal_negatives = config.get("temporal_negatives", True)
    check_views(video, 3 if temporal_negatives else 2, "vtdl")
    return momentum_contrast_loss(
        model,
        video[:, 0],
        video[:, 1],
        negative_video=video[:, 2] if temporal_negatives else None,
        train=train,
        temperature=config.get("temperature", 0.07),
        momentum=config.get("momentum", 0.999),
    )


register("vtdl", Objective(vtdl_loss, build_vtdl, vtdl_clips, final_eval="knn"))
