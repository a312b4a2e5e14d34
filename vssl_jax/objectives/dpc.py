"""Dense Predictive Coding (Han, Xie & Zisserman 2019, `TengdaHan/DPC`) and its Transformer
variant, the CPCTrans seed (`yliu1229/CPCTR`).

A clip is `num_seq` blocks of `seq_len` frames, `downsample` frames apart, one after another.
The encoder maps every block to a feature map z_t `[H', W', C]`; an aggregator reads the first
`num_seq - pred_step` blocks, and a predictor phi (1x1 conv, ReLU, 1x1 conv) predicts the next
block's map; the prediction is fed back to the aggregator for `pred_step` steps. The loss is a
dense InfoNCE: every predicted (video, step, position) vector is scored against every true one in
the global batch; the matching one is the positive, every other video, step and position is a
negative. Scores are raw dot products (DPC); `temperature` divides them and `normalize` turns them
into cosine similarities (then use a temperature well below 1, e.g. 0.1).

Objectives, all keys in `config.objective` (defaults `dpc` / `cpc_transformer`):
    num_seq (8 / 5), seq_len (5 / 1), pred_step (3 / 3), downsample (3 / 3): the clip layout;
    temperature (1.0), normalize (False): the scores;
    grayscale_prob (0.5), color_jitter ((0.5, 0.5, 0.5, 0.25): brightness, contrast, saturation,
    hue): DPC's per-frame colour augmentation (0 turns a part off);
    gru_dropout (0.1, `dpc` only): dropout on the ConvGRU state after every step, as DPC.
The examples' `video` is uint8 `[num_seq * seq_len, crop, crop, 3]`, blocks in order (the layout
of a plain clip, so any encoder can read it); the models cut it into blocks.

- `dpc`: an encoder with a dense `feature_map` (ResNet3D, I3D / S3D) runs on every block, its map is
  averaged over the block's time (DPC pools time inside a block); a one-layer ConvGRU with 1x1
  kernels (DPC's `kernel_size=1`; written as Linear layers over channels, the same map), hidden
  size = feature size, aggregates ReLU'd maps from a zero state; phi gives z_hat, whose ReLU is fed
  back, as DPC. Orthogonal weights and zero biases, as DPC's `_initialize_weights`.
  Deviations: the zoo's maps end with a ReLU, so the targets are non-negative (DPC's backbone drops
  its last ReLU and scores against signed maps; changing the zoo model would change what
  fine-tuning restores). BatchNorm keeps running averages (DPC's backbone uses batch statistics
  even at test time); both use batch statistics when training.
- `cpc_transformer`: the encoder must be `transformer_resnet18` or `transformer_vit`
  (`FrameTransformer`; a ViT's map is its grid of patch tokens). Its 2D ResNet (or ViT) gives every frame a map `[H', W', C]` (averaged over a block's frames when `seq_len` > 1); its
  `project` layer maps every position to a token z `[D]`: the targets. Tokens plus the `position`
  embedding of their block go through its Transformer `layers` and final `norm`, which are the
  aggregator (replacing the ConvGRU); phi on the last block's outputs predicts the next block's
  tokens, which are appended (with their block's position embedding) for the next step. Attention
  is over all (block, position) tokens with a prefix mask: context tokens see all context
  tokens, a predicted block sees the context and the predicted blocks up to itself. After
  pretraining, fine-tuning `transformer_resnet18` restores backbone, project, position, layers
  and norm by the same paths (with `seq_len` 1 a block is a frame, so the position embeddings
  mean frames `downsample` apart in both stages).
  Deviations from the seed, which runs a bidirectional Transformer (one layer, two heads, no
  position encoding) over every (frame, position) of all `num_seq` frames and then DPC's ConvGRU,
  with the Transformer's outputs at the future frames as targets: there the context's outputs
  have attended to the future frames they are asked to predict, and the Transformer is not the
  zoo model's. Here no token of a predicted block is seen before it is predicted. The seed's
  best run ("5pred3 + 7pred3") pretrains with `num_seq` 5, `pred_step` 3, `seq_len` 1 and
  fine-tunes on 7 frames.
Both: crop and flip are drawn once per clip; grey (one random channel copied to all three, DPC's
"RandomGray") and colour jitter (brightness, contrast, saturation, hue in a random order) are
drawn per frame, as DPC, so colour cannot tell the blocks of one clip from another's. The jitter
is `vssl_jax.data.video_augment`'s: hue turns colours about the grey axis where DPC shifts HSV
hue. DPC crops 224 px from 256 px frames and scales to 128; here the crop is `data.crop_size`
from the stored frames, unscaled. Videos shorter than the clip loop (`vssl_jax.data.sampling`);
DPC drops them. DPC's curriculum (predicting further with less context in later stages) is not
built in.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vssl_jax.data import records, sampling, transforms, video_augment
from vssl_jax.data.pipeline import ClipSpec
from vssl_jax.models.frame_transformer import FrameTransformer
from vssl_jax.objectives import Objective, nce, register

# ---------------------------------------------------------------- Clip layout


@dataclasses.dataclass(frozen=True)
class BlockLayout:
    num_seq: int  # Blocks per clip.
    seq_len: int  # Frames per block.
    pred_step: int  # Blocks predicted, the last ones of the clip.
    downsample: int  # Source frames between consecutive frames of the clip.

    @property
    def num_frames(self) -> int:
        return self.num_seq * self.seq_len

    @property
    def num_context(self) -> int:
        return self.num_seq - self.pred_step


DPC_LAYOUT = BlockLayout(num_seq=8, seq_len=5, pred_step=3, downsample=3)
CPC_TRANSFORMER_LAYOUT = BlockLayout(num_seq=5, seq_len=1, pred_step=3, downsample=3)


def block_layout(config, defaults: BlockLayout) -> BlockLayout:
    """The layout `config.objective` asks for; keys it lacks take `defaults`."""
    layout = BlockLayout(
        **{
            field.name: int(config.get(field.name, getattr(defaults, field.name)))
            for field in dataclasses.fields(BlockLayout)
        }
    )
    if not 0 < layout.pred_step < layout.num_seq:
        raise ValueError(
            f"objective.pred_step must be in [1, num_seq - 1] = [1, {layout.num_seq - 1}], "
            f"got {layout.pred_step}: at least one block of context and one to predict"
        )
    if layout.seq_len < 1 or layout.downsample < 1:
        raise ValueError(
            f"objective.seq_len ({layout.seq_len}) and downsample ({layout.downsample}) "
            "must be >= 1"
        )
    return layout


# ---------------------------------------------------------------- Host: clip and augmentation


def color_augment(
    video: np.ndarray,
    rng: np.random.Generator,
    grayscale_prob: float,
    jitter: tuple[float, float, float, float],
) -> np.ndarray:
    """DPC's frame-wise colour augmentation of uint8 `[T, H, W, 3]`: each frame independently
    becomes grey with probability `grayscale_prob` (DPC's "RandomGray": one random channel copied
    to all three, not the luma), then gets its own colour jitter (`jitter` = brightness,
    contrast, saturation, hue strengths; torchvision's draw, in a random order)."""
    if not grayscale_prob and not any(jitter):
        return video
    frames = []
    for frame in video[:, None]:  # [1, H, W, 3] each.
        if rng.random() < grayscale_prob:
            frame = np.repeat(frame[..., int(rng.integers(3)), None], 3, axis=-1)
        if any(jitter):
            frame = video_augment.color_jitter(frame, video_augment.sample_jitter(rng, *jitter))
        frames.append(frame)
    return np.concatenate(frames)


@dataclasses.dataclass(frozen=True)
class BlockClip:
    """Record bytes -> {'video': uint8 [num_seq * seq_len, crop, crop, 3], 'label': int32}."""

    num_frames: int
    stride: int
    crop_size: int
    flip: bool
    grayscale_prob: float
    color_jitter: tuple[float, float, float, float]

    def __call__(
        self, record: records.VideoRecord, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        indices = sampling.random_clip_indices(record.num_frames, self.num_frames, self.stride, rng)
        video = transforms.decode_frames(record.frames, indices, record.path)
        video = transforms.random_crop(video, self.crop_size, rng, record.path)
        if self.flip:
            video = transforms.random_flip(video, rng)
        video = color_augment(video, rng, self.grayscale_prob, self.color_jitter)
        return {"video": np.ascontiguousarray(video), "label": np.int32(record.label)}


def block_clip(spec: ClipSpec, config, *, defaults: BlockLayout) -> BlockClip:
    """The objective's `train_example`: plain values only, so grain can pickle it."""
    layout = block_layout(config, defaults)
    jitter = tuple(float(s) for s in config.get("color_jitter", (0.5, 0.5, 0.5, 0.25)))
    if len(jitter) != 4:
        raise ValueError(
            f"objective.color_jitter is (brightness, contrast, saturation, hue), got {jitter}"
        )
    return BlockClip(
        num_frames=layout.num_frames,
        stride=layout.downsample,
        crop_size=spec.crop_size,
        flip=spec.flip,
        grayscale_prob=float(config.get("grayscale_prob", 0.5)),
        color_jitter=jitter,
    )


# ---------------------------------------------------------------- Device: heads and models


def _linear(cin: int, cout: int, rngs: nnx.Rngs) -> nnx.Linear:
    # DPC initialises its aggregator and predictor orthogonally, biases at zero.
    return nnx.Linear(
        cin,
        cout,
        kernel_init=nnx.initializers.orthogonal(),
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )


class ConvGRUCell(nnx.Module):
    """DPC's ConvGRU cell with 1x1 kernels: one GRU applied at every position, float32.

    update = sigmoid(W_u [x, h]), reset = sigmoid(W_r [x, h]),
    out = tanh(W_o [x, reset * h]), h' = (1 - update) * h + update * out.
    """

    def __init__(self, input_size: int, hidden_size: int, *, rngs: nnx.Rngs):
        self.reset_gate = _linear(input_size + hidden_size, hidden_size, rngs)
        self.update_gate = _linear(input_size + hidden_size, hidden_size, rngs)
        self.out_gate = _linear(input_size + hidden_size, hidden_size, rngs)

    def __call__(self, x: jax.Array, hidden: jax.Array) -> jax.Array:
        """x `[..., input_size]`, hidden `[..., hidden_size]` -> new hidden `[..., hidden_size]`."""
        combined = jnp.concatenate([x, hidden], axis=-1)
        update = nnx.sigmoid(self.update_gate(combined))
        reset = nnx.sigmoid(self.reset_gate(combined))
        out = jnp.tanh(self.out_gate(jnp.concatenate([x, hidden * reset], axis=-1)))
        return hidden * (1.0 - update) + out * update


class Predictor(nnx.Module):
    """phi: 1x1 conv, ReLU, 1x1 conv (Linear layers over channels) `[..., dim] -> [..., dim]`."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.hidden = _linear(dim, dim, rngs)
        self.out = _linear(dim, dim, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden(x)))


def _check_frames(video: jax.Array, layout: BlockLayout) -> None:
    if video.shape[1] != layout.num_frames:
        raise ValueError(
            f"clip of {video.shape[1]} frames; the objective's layout needs num_seq * seq_len = "
            f"{layout.num_seq} * {layout.seq_len} = {layout.num_frames}"
        )


class DensePredictiveCoding(nnx.Module):
    """DPC: encoder feature maps per block, ConvGRU aggregator, predictor phi."""

    def __init__(
        self, encoder: nnx.Module, layout: BlockLayout, *, gru_dropout: float, rngs: nnx.Rngs
    ):
        if not hasattr(encoder, "feature_map"):
            raise ValueError(
                f"objective 'dpc' needs an encoder with a dense feature map (the ResNet3D family, "
                f"I3D, S3D); {type(encoder).__name__} has none (transformer_resnet18: use "
                "'cpc_transformer')"
            )
        self.encoder = encoder
        dim = encoder.feature_dim
        self.aggregator = ConvGRUCell(dim, dim, rngs=rngs)
        self.dropout = nnx.Dropout(gru_dropout)
        self.predictor = Predictor(dim, rngs=rngs)
        self.layout = layout

    def block_features(self, video: jax.Array, *, train: bool) -> jax.Array:
        """[batch, num_seq * seq_len, H, W, 3] -> per-block maps [batch, num_seq, H', W', C]."""
        _check_frames(video, self.layout)
        batch = video.shape[0]
        blocks = video.reshape(batch * self.layout.num_seq, self.layout.seq_len, *video.shape[2:])
        maps = self.encoder.feature_map(blocks, train=train).mean(axis=1)  # Pool the block's time.
        return maps.reshape(batch, self.layout.num_seq, *maps.shape[1:]).astype(jnp.float32)

    def _step(self, x: jax.Array, hidden: jax.Array, train: bool, rngs) -> jax.Array:
        return self.dropout(self.aggregator(x, hidden), deterministic=not train, rngs=rngs)

    def predict(self, features: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """Block maps [batch, num_seq, H', W', C] (only the context blocks are read) -> predicted
        maps of the last `pred_step` blocks [batch, pred_step, H', W', C]."""
        context = nnx.relu(features[:, : self.layout.num_context])
        hidden = jnp.zeros_like(context[:, 0])
        for t in range(self.layout.num_context):
            hidden = self._step(context[:, t], hidden, train, rngs)
        predictions = []
        for step in range(self.layout.pred_step):
            predictions.append(self.predictor(hidden))
            if step + 1 < self.layout.pred_step:
                hidden = self._step(nnx.relu(predictions[-1]), hidden, train, rngs)
        return jnp.stack(predictions, axis=1)

    def __call__(self, video: jax.Array, *, train: bool, rngs=None) -> tuple[jax.Array, jax.Array]:
        """[batch, num_seq * seq_len, H, W, 3] -> (predicted, true) maps of the predicted blocks,
        both [batch, pred_step, H', W', C] float32."""
        features = self.block_features(video, train=train)
        predictions = self.predict(features, train=train, rngs=rngs)
        return predictions, features[:, self.layout.num_context :]


class CPCTransformer(nnx.Module):
    """CPCTrans: `transformer_resnet18`'s 2D ResNet gives tokens per (block, position), its
    Transformer is the aggregator (prefix attention mask), predictor phi."""

    def __init__(self, encoder: nnx.Module, layout: BlockLayout, *, rngs: nnx.Rngs):
        if not isinstance(encoder, FrameTransformer):
            raise ValueError(
                f"objective 'cpc_transformer' needs model.name 'transformer_resnet18' or "
                f"'transformer_vit' (2D frame encoder + Transformer), got {type(encoder).__name__} (3D encoders: use 'dpc')"
            )
        if layout.num_seq > encoder.position.shape[0]:
            raise ValueError(
                f"objective.num_seq {layout.num_seq} exceeds the Transformer's position table "
                f"({encoder.position.shape[0]}); raise model.max_frames"
            )
        self.encoder = encoder
        self.predictor = Predictor(encoder.feature_dim, rngs=rngs)
        self.layout = layout

    def block_tokens(self, video: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """[batch, num_seq * seq_len, H, W, 3] -> tokens z [batch, num_seq, H', W', D] float32."""
        _check_frames(video, self.layout)
        batch, time = video.shape[:2]
        maps = self.encoder.backbone.feature_map(
            video.reshape(batch * time, *video.shape[2:]), train=train, rngs=rngs
        )
        maps = maps.reshape(batch, self.layout.num_seq, self.layout.seq_len, *maps.shape[1:])
        return self.encoder.project(maps.mean(axis=2)).astype(jnp.float32)

    def aggregate(self, tokens: jax.Array) -> jax.Array:
        """tokens [batch, blocks, positions, D] -> Transformer outputs, same shape. The first
        `num_context` blocks attend to each other; a later block to those and to itself and the
        blocks before it."""
        batch, num_blocks, positions, dim = tokens.shape
        x = tokens + self.encoder.position[:num_blocks][None, :, None, :]
        x = x.reshape(batch, num_blocks * positions, dim)
        block = np.repeat(np.arange(num_blocks), positions)
        visible = (block[None, :] < self.layout.num_context) | (block[None, :] <= block[:, None])
        for layer in self.encoder.layers:
            x = layer(x, mask=jnp.asarray(visible)[None, None])
        return self.encoder.norm(x).astype(jnp.float32).reshape(tokens.shape)

    def predict(self, tokens: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        """Tokens [batch, num_seq, H', W', D] (only the context blocks are read) -> predicted
        tokens of the last `pred_step` blocks [batch, pred_step, H', W', D]."""
        batch, _, height, width, dim = tokens.shape
        sequence = tokens[:, : self.layout.num_context].reshape(batch, -1, height * width, dim)
        predictions = []
        for _ in range(self.layout.pred_step):
            predictions.append(self.predictor(self.aggregate(sequence)[:, -1]))
            sequence = jnp.concatenate([sequence, predictions[-1][:, None]], axis=1)
        return jnp.stack(predictions, axis=1).reshape(batch, -1, height, width, dim)

    def __call__(self, video: jax.Array, *, train: bool, rngs=None) -> tuple[jax.Array, jax.Array]:
        """[batch, num_seq * seq_len, H, W, 3] -> (predicted, true) tokens of the predicted
        blocks, both [batch, pred_step, H', W', D] float32."""
        tokens = self.block_tokens(video, train=train, rngs=rngs)
        return self.predict(tokens), tokens[:, self.layout.num_context :]


def build_dpc(encoder: nnx.Module, config, rngs: nnx.Rngs) -> DensePredictiveCoding:
    return DensePredictiveCoding(
        encoder,
        block_layout(config, DPC_LAYOUT),
        gru_dropout=float(config.get("gru_dropout", 0.1)),
        rngs=rngs,
    )


def build_cpc_transformer(encoder: nnx.Module, config, rngs: nnx.Rngs) -> CPCTransformer:
    return CPCTransformer(encoder, block_layout(config, CPC_TRANSFORMER_LAYOUT), rngs=rngs)


# ---------------------------------------------------------------- Loss


def dense_nce(
    predicted: jax.Array, target: jax.Array, *, temperature: float = 1.0, normalize: bool = False
) -> tuple[jax.Array, jax.Array]:
    """DPC's dense InfoNCE. `predicted`, `target` [batch, pred_step, H', W', C]: row (b, s, p) of
    the score matrix holds predicted[b, s, p] . target[b', s', p'] / temperature for every
    (b', s', p'); its positive is (b, s, p). Returns (mean loss, top-1 accuracy of the positive)."""
    dim = predicted.shape[-1]
    queries = predicted.reshape(-1, dim).astype(jnp.float32)
    keys = target.reshape(-1, dim).astype(jnp.float32)
    if normalize:
        queries, keys = nce.l2_normalize(queries), nce.l2_normalize(keys)
    # Raw dot products reach the hundreds: a reduced-precision matmul moves them by whole units.
    scores = jnp.matmul(queries, keys.T, precision=jax.lax.Precision.HIGHEST) / temperature
    positive = jnp.arange(scores.shape[0])
    loss = nce.info_nce(scores, positive).mean()
    accuracy = (scores.argmax(axis=1) == positive).astype(jnp.float32).mean()
    return loss, accuracy


def dense_predictive_loss(model, batch: dict, *, train: bool, rngs, config):
    """Dense InfoNCE of the model's predictions; metrics: loss and top-1 accuracy."""
    predicted, target = model(batch["video"], train=train, rngs=rngs)
    loss, accuracy = dense_nce(
        predicted,
        target,
        temperature=float(config.get("temperature", 1.0)),
        normalize=bool(config.get("normalize", False)),
    )
    return loss, {"loss": loss, "accuracy": accuracy}


register(
    "dpc",
    Objective(
        loss=dense_predictive_loss,
        build_model=build_dpc,
        train_example=functools.partial(block_clip, defaults=DPC_LAYOUT),
        final_eval="knn",
        negatives_from_batch=True,
    ),
)
register(
    "cpc_transformer",
    Objective(
        loss=dense_predictive_loss,
        build_model=build_cpc_transformer,
        train_example=functools.partial(block_clip, defaults=CPC_TRANSFORMER_LAYOUT),
        final_eval="knn",
        negatives_from_batch=True,
    ),
)
