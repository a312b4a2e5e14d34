"""MoCo v2 for video (He et al. 2020; Chen et al. 2020; `facebookresearch/moco`): objective `moco`.

Views: two clips of one video at different times (two random starts, distinct whenever the
video has more than one), each with its own random crop, flip (`data.flip`), colour jitter
(probability `jitter_prob`) and greyscale (`grayscale_prob`), drawn once per clip and applied to
every frame (`vssl_jax.data.video_augment`). The examples' `video` is uint8
`[2, time, crop, crop, 3]`: query clip, key clip.

Model (`MomentumContrast`, also VTDL's): the query network is the zoo encoder (`encoder`, its
pooled features) and an MLP projection head (`projection`, MoCo v2's fc-ReLU-fc to
`embedding_dim`); the key network (`key_encoder`, `key_projection`) is a copy of it whose weights
are `MomentumParam` variables, not `nnx.Param`: no gradient reaches them and the optimizer never
sees them. At every training step, before the keys are computed (MoCo's order), they move to
    key = momentum * key + (1 - momentum) * stop_gradient(query)
and start equal to the query weights. The key network keeps its own BatchNorm statistics. The
queue (`queue`, `[queue_size, embedding_dim]`, unit rows, initialised with random unit vectors
as MoCo) and its write position (`queue_pointer`) are `KeyQueue` variables; after the loss, the
batch's keys overwrite the oldest rows (wrapping around the end).

Loss: InfoNCE over [positive key, every queued key] with unit-length embeddings divided by
`temperature` (0.2 in v2); the global batch's keys are enqueued together, as MoCo's all-gather.

BatchNorm and MoCo's shuffle BN. MoCo computes BatchNorm statistics per GPU and runs the key
encoder on a batch shuffled across GPUs, so that a query and its positive key are normalised
with statistics of different sub-batches: otherwise the network can find its positive through
the sub-batch's statistics rather than through the content. Here the loss runs under `jax.jit`
on the global batch and the zoo's BatchNorm averages over the whole batch axis, as SyncBN does:
every clip of a step, query or key, is normalised with statistics of all clips of its view, so
there are no sub-batches, and permuting the key batch before the key encoder would change
nothing (the statistics are permutation-invariant). So no shuffle is done; the global statistics
are what SimCLR and MoCo v3 use instead of shuffle BN. What remains is weaker than MoCo v2's
setting: the positive keys share one step's statistics while the queued negatives were
normalised with older steps'. Reproducing shuffle BN exactly would take "ghost" BatchNorm:
statistics over G disjoint groups of the batch (the GPUs), with the key batch permuted across
groups; the zoo's BatchNorm layers have no groups, so that would mean running each encoder
under `jax.vmap` over groups and averaging the running statistics.

Keys of `config.objective` (defaults): embedding_dim (128), head_layers (2), queue_size
(65536: MoCo's ImageNet size; video configs set a few thousand), momentum (0.999),
temperature (0.2), color_jitter ((0.4, 0.4, 0.4, 0.1): brightness, contrast, saturation, hue),
jitter_prob (0.8), grayscale_prob (0.2).
Deviations from MoCo v2's ImageNet recipe: crops are `data.crop_size` windows of the stored
frames (no random-resized crop: frames are stored at a fixed short side), there is no Gaussian
blur, and hue turns colours about the grey axis rather than shifting HSV hue
(`video_augment.color_jitter`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vssl_jax.data import records, sampling, transforms, video_augment
from vssl_jax.data.pipeline import ClipSpec
from vssl_jax.models.heads import ProjectionHead
from vssl_jax.objectives import Objective, nce, register

# ---------------------------------------------------------------- Clip sampling


def clip_indices(start: int, num_frames: int, clip_len: int, stride: int) -> np.ndarray:
    """The clip at `start`, looping past the video's end (`vssl_jax.data.sampling`'s rule)."""
    return (start + np.arange(clip_len) * stride) % num_frames


def other_start(
    num_frames: int, clip_len: int, stride: int, start: int, min_gap: int, rng: np.random.Generator
) -> int:
    """A clip start at least `min_gap` frames from `start`, uniform over the starts whose clip
    fits in the video; when none does, `start` moved by max(`min_gap`, num_frames // 3) (the
    clip loops), the VTDL seed's fallback."""
    last_start = max(num_frames - sampling.clip_span(clip_len, stride), 0)
    starts = np.arange(last_start + 1)
    far = starts[np.abs(starts - start) >= min_gap]
    if far.size:
        return int(rng.choice(far))
    return (start + max(min_gap, num_frames // 3)) % num_frames


# ---------------------------------------------------------------- Views


class MoCoClips:
    """Record bytes -> {'video': uint8 [2, T, crop, crop, 3], 'label': int32}: two clips of the
    video at different times, each augmented independently."""

    def __init__(
        self,
        spec: ClipSpec,
        *,
        color_jitter: tuple[float, float, float, float],
        jitter_prob: float,
        grayscale_prob: float,
    ):
        self.spec = spec
        self.color_jitter = tuple(color_jitter)
        self.jitter_prob = jitter_prob
        self.grayscale_prob = grayscale_prob

    def _augment(self, clip: np.ndarray, rng: np.random.Generator, source: str) -> np.ndarray:
        clip = transforms.random_crop(clip, self.spec.crop_size, rng, source)
        if self.spec.flip:
            clip = transforms.random_flip(clip, rng)
        if rng.random() < self.jitter_prob:
            clip = video_augment.color_jitter(
                clip, video_augment.sample_jitter(rng, *self.color_jitter)
            )
        if rng.random() < self.grayscale_prob:
            clip = video_augment.grayscale(clip)
        return clip

    def __call__(
        self, record: records.VideoRecord, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        length, stride = self.spec.num_frames, self.spec.frame_stride
        first = sampling.random_clip_indices(record.num_frames, length, stride, rng)
        start = other_start(record.num_frames, length, stride, int(first[0]), 1, rng)
        second = clip_indices(start, record.num_frames, length, stride)
        # One decode for both clips: frames they share are decoded once.
        frames = transforms.decode_frames(
            record.frames, np.concatenate([first, second]), record.path
        )
        views = [
            self._augment(frames[i * length : (i + 1) * length], rng, record.path) for i in (0, 1)
        ]
        return {"video": np.stack(views), "label": np.int32(record.label)}


def moco_clips(spec: ClipSpec, config) -> MoCoClips:
    return MoCoClips(
        spec,
        color_jitter=tuple(config.get("color_jitter", (0.4, 0.4, 0.4, 0.1))),
        jitter_prob=float(config.get("jitter_prob", 0.8)),
        grayscale_prob=float(config.get("grayscale_prob", 0.2)),
    )


# ---------------------------------------------------------------- Model


class MomentumParam(nnx.Variable):
    """A key-network weight: the moving average of its query twin. Not an `nnx.Param`, so the
    train step neither differentiates nor optimizes it; it lives in `model_state`."""


class KeyQueue(nnx.Variable):
    """The queue of past keys `[queue_size, embedding_dim]`, or its write position."""


def momentum_copy(module: nnx.Module) -> nnx.Module:
    """A deep copy of `module` whose `nnx.Param`s are `MomentumParam`s of the same values (its
    other variables, e.g. BatchNorm statistics, are copied as they are)."""
    graphdef, state = nnx.split(nnx.clone(module))
    state = jax.tree.map(
        lambda v: MomentumParam(v.get_value()) if isinstance(v, nnx.Param) else v,
        state,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    return nnx.merge(graphdef, state)


class MomentumContrast(nnx.Module):
    """Query network (`encoder` + `projection`), its momentum copy and a queue of keys."""

    def __init__(
        self,
        encoder: nnx.Module,
        *,
        embedding_dim: int,
        head_layers: int,
        queue_size: int,
        queue_init: str,
        rngs: nnx.Rngs,
    ):
        self.encoder = encoder
        self.projection = ProjectionHead(
            encoder.feature_dim, embedding_dim, num_layers=head_layers, rngs=rngs
        )
        self.key_encoder = momentum_copy(encoder)
        self.key_projection = momentum_copy(self.projection)
        shape = (queue_size, embedding_dim)
        if queue_init == "normal":  # MoCo: Gaussian vectors scaled to unit length.
            keys = nce.l2_normalize(jax.random.normal(rngs.params(), shape))
        elif queue_init == "uniform":  # The VTDL seed: U(-s, s), s = sqrt(3 / dim): E|x|^2 = 1.
            bound = (3.0 / embedding_dim) ** 0.5
            keys = jax.random.uniform(rngs.params(), shape, minval=-bound, maxval=bound)
        else:
            raise ValueError(f"queue_init must be 'normal' or 'uniform', not '{queue_init}'")
        self.queue = KeyQueue(keys)
        self.queue_pointer = KeyQueue(jnp.zeros((), jnp.int32))

    def queries(self, video: jax.Array, *, train: bool) -> jax.Array:
        """[batch, time, height, width, 3] -> unit-length embeddings [batch, embedding_dim]."""
        features = self.encoder.features(video, train=train)
        return nce.l2_normalize(self.projection(features, train=train))

    def update_key_network(self, momentum: float) -> None:
        """key = momentum * key + (1 - momentum) * query, for every weight; no gradient."""
        for query, key in (
            (self.encoder, self.key_encoder),
            (self.projection, self.key_projection),
        ):
            query_weights = nnx.to_pure_dict(nnx.state(query, nnx.Param))
            key_weights = nnx.to_pure_dict(nnx.state(key, MomentumParam))
            nnx.update(
                key,
                jax.tree.map(
                    lambda k, q: momentum * k + (1.0 - momentum) * jax.lax.stop_gradient(q),
                    key_weights,
                    query_weights,
                ),
            )

    def keys(self, video: jax.Array, *, train: bool) -> jax.Array:
        """The key network's unit-length embeddings [batch, embedding_dim], without gradient.
        With `train`, BatchNorm uses (and updates) batch statistics, as MoCo's key encoder."""
        features = self.key_encoder.features(video, train=train)
        return jax.lax.stop_gradient(nce.l2_normalize(self.key_projection(features, train=train)))

    def enqueue(self, keys: jax.Array) -> None:
        """Writes `keys` [batch, embedding_dim] over the oldest rows and advances the pointer."""
        queue = self.queue.get_value()
        if keys.shape[0] > queue.shape[0]:
            raise ValueError(
                f"batch of {keys.shape[0]} keys does not fit a queue of {queue.shape[0]}; "
                "raise config.objective.queue_size"
            )
        pointer = self.queue_pointer.get_value()
        rows = (pointer + jnp.arange(keys.shape[0])) % queue.shape[0]
        self.queue.set_value(queue.at[rows].set(keys.astype(queue.dtype)))
        self.queue_pointer.set_value((pointer + keys.shape[0]) % queue.shape[0])


# ---------------------------------------------------------------- Loss


def contrastive_logits(
    queries: jax.Array,
    keys: jax.Array,
    queue: jax.Array,
    temperature: float,
    negatives: jax.Array | None = None,
) -> jax.Array:
    """Scores `[batch, 1 + queue_size (+ 1)]` / temperature: column 0 is q_i . k_i (the
    positive), then q_i . queue_j, then (with `negatives` [batch, dim]) q_i . n_i.
    Full float32 products: at temperature 0.07 bf16 rounding of the scores is not negligible."""
    positive = jnp.einsum("nc,nc->n", queries, keys, precision="highest")[:, None]
    columns = [positive, jnp.einsum("nc,kc->nk", queries, queue, precision="highest")]
    if negatives is not None:
        columns.append(jnp.einsum("nc,nc->n", queries, negatives, precision="highest")[:, None])
    return jnp.concatenate(columns, axis=1) / temperature


def check_views(video: jax.Array, num_views: int, objective: str) -> None:
    if video.ndim != 6 or video.shape[1] != num_views:
        raise ValueError(
            f"objective '{objective}' reads video [batch, {num_views}, time, height, width, 3] "
            f"(its train_example's views), got shape {tuple(video.shape)}"
        )


def momentum_contrast_loss(
    model: MomentumContrast,
    query_video: jax.Array,
    key_video: jax.Array,
    *,
    train: bool,
    temperature: float,
    momentum: float,
    negative_video: jax.Array | None = None,
):
    """InfoNCE of queries against their keys, the queue and (optionally) one extra negative per
    query embedded by the query network. With `train`: momentum update before the keys, enqueue
    after the loss. Returns (loss, metrics)."""
    queries = model.queries(query_video, train=train)
    if train:
        model.update_key_network(momentum)
    keys = model.keys(key_video, train=train)
    negatives = None if negative_video is None else model.queries(negative_video, train=train)
    queue = jax.lax.stop_gradient(model.queue.get_value())
    logits = contrastive_logits(queries, keys, queue, temperature, negatives)
    positive = jnp.zeros((logits.shape[0],), jnp.int32)
    loss = nce.info_nce(logits, positive).mean()
    metrics = {
        "loss": loss,
        # Instance discrimination: the positive key scores above every negative.
        "accuracy": (jnp.argmax(logits, axis=1) == 0).astype(jnp.float32).mean(),
        "positive_similarity": (queries * keys).sum(-1).mean(),
    }
    if negatives is not None:
        metrics["temporal_negative_similarity"] = (queries * negatives).sum(-1).mean()
    if train:
        model.enqueue(keys)
    return loss, metrics


def moco_loss(model: MomentumContrast, batch: dict, *, train: bool, rngs: nnx.Rngs, config):
    """`batch['video']` [batch, 2, T, H, W, 3]: query clips, key clips."""
    video = batch["video"]
    check_views(video, 2, "moco")
    return momentum_contrast_loss(
        model,
        video[:, 0],
        video[:, 1],
        train=train,
        temperature=config.get("temperature", 0.2),
        momentum=config.get("momentum", 0.999),
    )


def build_moco(encoder: nnx.Module, config, rngs: nnx.Rngs) -> MomentumContrast:
    return MomentumContrast(
        encoder,
        embedding_dim=config.get("embedding_dim", 128),
        head_layers=config.get("head_layers", 2),
        queue_size=config.get("queue_size", 65536),
        queue_init="normal",
        rngs=rngs,
    )


register("moco", Objective(moco_loss, build_moco, moco_clips, final_eval="knn"))
