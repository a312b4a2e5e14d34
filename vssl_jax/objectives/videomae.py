"""VideoMAE (Tong et al. 2022; `MCG-NJU/VideoMAE`): masked autoencoding of video tubelets,
objective `videomae`.

Masking (`tube_mask`, VideoMAE's `TubeMaskingGenerator`): of the `h * w` spatial positions of
the token grid, exactly `int(mask_ratio * h * w)` are masked, chosen uniformly per clip, and the
same positions are masked in every temporal slice (a "tube"), so a masked patch cannot be copied
from the next frame. The mask is drawn on the device from `rngs.augment()` rather than on the
host: its shape is the encoder's token grid, which the model knows and the clip sampler does
not, and the examples stay the plain clips of supervised training (`TrainClip`: random crop,
flip as `data.flip`; VideoMAE's multi-scale crop is not reproduced).

Model (`MaskedVideoAutoencoder`): the zoo's joint space-time ViT (`vivit_joint`) is the encoder
(`encoder`) and sees only the visible tokens (patch embedding + its position table, then its
blocks and final norm); a linear map without bias (`encoder_to_decoder`) to the decoder's width;
the encoded visible tokens and one learned `mask_token` per masked position, each plus a fixed
sinusoidal position of the decoder's width, go through a light Transformer (`decoder`,
`decoder_norm`); its outputs at the masked positions are projected to the tubelet's pixels
(`pixel_head`, `t * p * p * 3` values, laid out `(t, p, p, channel)`).

Loss: mean squared error over the masked tubelets only. With `normalize_target` (VideoMAE's
`normlize_target`, default True) each tubelet's target is normalised per channel over its
`t * p * p` pixels, `(x - mean) / (sqrt(unbiased variance) + 1e-6)`.
The train step hands the loss clips already normalised with the dataset's channel mean and std
(`vssl_jax.state.normalized`), where VideoMAE un-normalises back to [0, 1] before building the
targets. Per-tubelet normalisation removes any per-channel affine map, so the normalised targets
are the same up to the 1e-6, which acts as 1e-6 * std_c in [0, 1] units (std_c ~ 0.22): a
difference only for tubelets of near-constant colour. Without `normalize_target` the targets
are the normalised pixels, i.e. VideoMAE's [0, 1] pixels with channel c's error scaled by
1 / std_c^2.

Keys of `config.objective` (defaults): mask_ratio (0.9; VideoMAE's UCF101 recipe uses 0.75),
decoder_width (384), decoder_depth (4), decoder_heads (6) (VideoMAE's decoder for ViT-B),
normalize_target (True).
Metrics: `loss`; `pixel_mse`, the reconstruction's squared error in the units of the train
step's normalised clip (with `normalize_target`, the prediction mapped back through each target
tubelet's own mean and std), comparable between runs with and without target normalisation.

Deviations from VideoMAE's code: every linear layer starts from a truncated normal of std 0.02
(VideoMAE's pretraining models use Xavier-uniform); the encoder's attention has a k bias too
(`vssl_jax.models.video_vit`); no multi-scale crop (above).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from vssl_jax.models import transformer
from vssl_jax.objectives import Objective, register

# ---------------------------------------------------------------- Masking


def num_masked_per_frame(grid: tuple[int, int, int], mask_ratio: float) -> int:
    """Masked spatial positions per temporal slice: int(mask_ratio * h * w), as VideoMAE; at
    least one must be masked and one visible."""
    per_frame = grid[1] * grid[2]
    masked = int(mask_ratio * per_frame)
    if not 0 < masked < per_frame:
        raise ValueError(
            f"mask_ratio {mask_ratio} masks {masked} of the {per_frame} patches of a frame; "
            "choose a ratio that masks at least one and leaves at least one visible"
        )
    return masked


def tube_mask(
    key: jax.Array, batch: int, grid: tuple[int, int, int], mask_ratio: float
) -> jax.Array:
    """bool `[batch, t * h * w]`, True where masked, tokens in row-major `(t, h, w)` order: per
    clip, the same `int(mask_ratio * h * w)` spatial positions in every temporal slice."""
    t, h, w = grid
    masked = num_masked_per_frame(grid, mask_ratio)
    order = jnp.argsort(jax.random.uniform(key, (batch, h * w)), axis=1)
    rows = jnp.arange(batch)[:, None]
    frame = jnp.zeros((batch, h * w), bool).at[rows, order[:, :masked]].set(True)
    return jnp.broadcast_to(frame[:, None, :], (batch, t, h * w)).reshape(batch, t * h * w)


def split_tokens(mask: jax.Array, num_visible: int) -> tuple[jax.Array, jax.Array]:
    """(visible, masked) token indices `[batch, n]`, each in increasing order, of a mask with
    `num_visible` False entries in every row."""
    order = jnp.argsort(mask, axis=1, stable=True)  # False (visible) first, in index order.
    return order[:, :num_visible], order[:, num_visible:]


def gather_tokens(tokens: jax.Array, indices: jax.Array) -> jax.Array:
    """[batch, n, d] at `indices` [batch, k] -> [batch, k, d]."""
    return jnp.take_along_axis(tokens, indices[..., None], axis=1)


# ---------------------------------------------------------------- Targets


def patchify(video: jax.Array, tubelet: tuple[int, int, int]) -> jax.Array:
    """[batch, T, H, W, C] -> tubelets [batch, t * h * w, pt * ph * pw, C], row-major (t, h, w)
    tokens, pixels `(pt, ph, pw)` row-major inside each (the order of `PatchEmbedding`)."""
    batch, *spatial, channels = video.shape
    grid = [s // p for s, p in zip(spatial, tubelet, strict=True)]
    x = video.reshape(batch, grid[0], tubelet[0], grid[1], tubelet[1], grid[2], tubelet[2], -1)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(batch, math.prod(grid), math.prod(tubelet), channels)


def normalize_patches(patches: jax.Array, eps: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """Per-tubelet, per-channel normalisation of `[..., pixels, C]`: (normalised, scale) with
    scale = sqrt(unbiased variance over pixels) + eps, `[..., 1, C]`."""
    mean = patches.mean(axis=-2, keepdims=True)
    scale = jnp.sqrt(patches.var(axis=-2, ddof=1, keepdims=True)) + eps
    return (patches - mean) / scale, scale


# ---------------------------------------------------------------- Model


class MaskedVideoAutoencoder(nnx.Module):
    """A tokenising encoder (`vivit_joint`) and VideoMAE's light decoder."""

    def __init__(
        self,
        encoder: nnx.Module,
        *,
        decoder_width: int,
        decoder_depth: int,
        decoder_heads: int,
        rngs: nnx.Rngs,
    ):
        if not all(hasattr(encoder, a) for a in ("embed", "encode", "token_grid", "tubelet")):
            raise ValueError(
                f"objective videomae needs an encoder that works on tokens (embed / encode / "
                f"token_grid, e.g. model.name=vivit_joint), not {type(encoder).__name__}"
            )
        dtype = encoder.patch_embedding.dtype
        self.encoder = encoder
        self.decoder_width = decoder_width
        self.encoder_to_decoder = transformer.linear(
            encoder.width, decoder_width, use_bias=False, dtype=dtype, rngs=rngs
        )
        # 1-D, so the optimizer's weight-decay mask (kernels only) leaves it out, as VideoMAE.
        self.mask_token = nnx.Param(
            jax.nn.initializers.truncated_normal(0.02)(rngs.params(), (decoder_width,))
        )
        self.decoder = transformer.BlockStack(
            decoder_width, decoder_depth, decoder_heads, dtype=dtype, rngs=rngs
        )
        self.decoder_norm = transformer.layer_norm(decoder_width, dtype=dtype, rngs=rngs)
        self.pixel_head = transformer.linear(
            decoder_width, 3 * math.prod(encoder.tubelet), dtype=dtype, rngs=rngs
        )

    def encode_visible(
        self, video: jax.Array, visible: jax.Array, *, train: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        """The encoder on the tokens at `visible` [batch, n_visible] only:
        [batch, T, H, W, 3] -> [batch, n_visible, encoder width]."""
        tokens = gather_tokens(self.encoder.embed(video), visible)
        return self.encoder.encode(tokens, train=train, rngs=rngs)

    def decode(
        self,
        encoded: jax.Array,
        visible: jax.Array,
        masked: jax.Array,
        num_tokens: int,
        *,
        train: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        """Encoded visible tokens [batch, n_visible, D] -> predicted pixels of the `masked`
        tokens [batch, n_masked, t * p * p * 3] (float32)."""
        positions = jnp.asarray(transformer.sinusoidal_table(num_tokens, self.decoder_width))
        x_visible = self.encoder_to_decoder(encoded)
        x_visible = x_visible + positions[visible].astype(x_visible.dtype)
        x_masked = self.mask_token[...].astype(x_visible.dtype) + positions[masked].astype(
            x_visible.dtype
        )
        x = self.decoder(jnp.concatenate([x_visible, x_masked], axis=1), train=train, rngs=rngs)
        x = self.decoder_norm(x[:, visible.shape[1] :])
        return self.pixel_head(x).astype(jnp.float32)


def build_videomae(encoder: nnx.Module, config, rngs: nnx.Rngs) -> MaskedVideoAutoencoder:
    return MaskedVideoAutoencoder(
        encoder,
        decoder_width=config.get("decoder_width", 384),
        decoder_depth=config.get("decoder_depth", 4),
        decoder_heads=config.get("decoder_heads", 6),
        rngs=rngs,
    )


# ---------------------------------------------------------------- Loss


def _predict_masked(
    model: MaskedVideoAutoencoder,
    video: jax.Array,
    key: jax.Array,
    mask_ratio: float,
    *,
    train: bool,
    rngs: nnx.Rngs | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One draw of the tube mask over `video` [batch, T, H, W, 3] and the model's guess at what
    it hides: (mask [batch, tokens], masked token indices [batch, n_masked], prediction and
    true tubelets [batch, n_masked, t * p * p, 3], float32)."""
    encoder = model.encoder
    grid = encoder.token_grid(video.shape)
    num_tokens = math.prod(grid)
    num_visible = grid[0] * (grid[1] * grid[2] - num_masked_per_frame(grid, mask_ratio))
    mask = tube_mask(key, video.shape[0], grid, mask_ratio)
    visible, masked = split_tokens(mask, num_visible)

    encoded = model.encode_visible(video, visible, train=train, rngs=rngs)
    prediction = model.decode(encoded, visible, masked, num_tokens, train=train, rngs=rngs)

    patches = gather_tokens(
        patchify(video.astype(jnp.float32), encoder.tubelet).reshape(
            video.shape[0], num_tokens, -1
        ),
        masked,
    )
    patches = patches.reshape(*masked.shape, math.prod(encoder.tubelet), 3)
    return mask, masked, prediction.reshape(patches.shape), patches


def videomae_loss(
    model: MaskedVideoAutoencoder, batch: dict, *, train: bool, rngs: nnx.Rngs, config
):
    """`batch['video']` [batch, T, H, W, 3] (normalised): reconstruction MSE of the masked
    tubelets. Returns (loss, metrics)."""
    video = batch["video"]
    if video.ndim != 5:
        raise ValueError(
            f"objective 'videomae' reads video [batch, time, height, width, 3], got shape "
            f"{tuple(video.shape)}"
        )
    _, _, prediction, patches = _predict_masked(
        model, video, rngs.augment(), config.get("mask_ratio", 0.9), train=train, rngs=rngs
    )
    if config.get("normalize_target", True):
        target, scale = normalize_patches(jax.lax.stop_gradient(patches))
        squared = jnp.square(prediction - target)
        pixel_mse = jnp.mean(squared * jnp.square(scale))
    else:
        squared = jnp.square(prediction - jax.lax.stop_gradient(patches))
        pixel_mse = jnp.mean(squared)
    loss = jnp.mean(squared)
    return loss, {"loss": loss, "pixel_mse": pixel_mse}


# ---------------------------------------------------------------- Pictures


def unpatchify(
    patches: jax.Array, grid: tuple[int, int, int], tubelet: tuple[int, int, int]
) -> jax.Array:
    """The inverse of `patchify`: [batch, t * h * w, pt * ph * pw, C] -> [batch, T, H, W, C]."""
    batch, channels = patches.shape[0], patches.shape[-1]
    x = patches.reshape(batch, *grid, *tubelet, channels).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(batch, *(g * p for g, p in zip(grid, tubelet, strict=True)), channels)


def reconstructions(
    model: MaskedVideoAutoencoder, video: jax.Array, key: jax.Array, config
) -> dict[str, jax.Array]:
    """What the model makes of normalised clips [batch, T, H, W, 3] under one draw of the tube
    mask, as clips of the same shape (normalised units), for pictures:
    `original`; `masked input`, the masked tubelets NaN (no pixels); `reconstruction`, the
    visible tubelets as they are and the masked ones predicted. With `normalize_target` the
    prediction is in per-tubelet normalised units; it is mapped back through each true
    tubelet's own mean and scale, as VideoMAE's visualisation script does."""
    mask, masked, prediction, patches = _predict_masked(
        model, video, key, config.get("mask_ratio", 0.9), train=False, rngs=None
    )
    if config.get("normalize_target", True):
        _, scale = normalize_patches(patches)
        prediction = prediction * scale + patches.mean(axis=-2, keepdims=True)
    tubelet = model.encoder.tubelet
    grid = model.encoder.token_grid(video.shape)
    tubelets = patchify(video.astype(jnp.float32), tubelet)
    rows = jnp.arange(video.shape[0])[:, None]
    return {
        "original": video.astype(jnp.float32),
        "masked input": unpatchify(
            jnp.where(mask[:, :, None, None], jnp.nan, tubelets), grid, tubelet
        ),
        "reconstruction": unpatchify(tubelets.at[rows, masked].set(prediction), grid, tubelet),
    }


register(
    "videomae",
    Objective(videomae_loss, build_videomae, final_eval="knn", pictures=reconstructions),
)
