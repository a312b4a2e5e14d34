"""TimeCycle: correspondence from the cycle-consistency of time (Wang, Jabri & Efros, CVPR 2019;
`xiaolonw/TimeCycle`, seed variant `martinetoering/3D-ResNets-PyTorch-TimeCycle`).

A patch of the last frame (the *target*) is tracked backward through the `video_len` frames
before it, then forward again to the target; where it comes back should be where it started.

Data: `video_len + 1` frames `frame_gap` source frames apart, one random crop (and flip) for all
(`train_example`, the dense clip sampler with that length and stride); the last frame is the
target, as in the seed (`predDistance 0`).

Features: every frame is encoded on its own by the shared encoder (frames folded into the batch,
each a one-frame clip through `encoder.feature_map`), then a 1x1 projection (`cycle_projection`,
the original's `afterconv1`) + ReLU, L2-normalised per cell: `[batch, frames, h, w, embed_dim]`.
The original also encodes frames independently (a 2D ResNet inflated with temporal kernel 1); on
a 3D ResNet the one-frame clips see only the centre tap of each temporal kernel (the outer taps
meet zero padding), so this loss trains the spatial part of the kernels, and in `multibranch`
the clip-level branches train the rest.

The patch: `patch_size` x `patch_size` cells of the target's map, drawn among the windows that
move most (`motion_fraction` of them, by the difference of the last two frames; the original
draws among the 10 of 49 windows of largest frame difference); its query is the patch's *pixels*
encoded alone, as the original encodes its patch crop. Both matter: a static patch, or a query
that knows its position in the frame (zero padding lets a map encode position), closes every
cycle by standing still.

Tracker, one step: the affinity of every patch cell with every cell of the next frame, softmax
over the frame's cells at `temperature`, gives each patch cell a soft-argmax position; the patch
centre is their mean (the cells' offsets from the centre sum to zero), and the next query is the
frame's embedding bilinearly sampled at centre + offsets (border-clamped), re-normalised. Every
operation is differentiable in the embeddings and in the positions.

Loss (weights from the config; defaults the seed's `lamda` 0.1 for both distances, 1 for the
similarity term; the original's own script used 0.02 for the cycles):
- `cycle`: for every cycle length k = 1..video_len (back to frame `video_len - k`, then forward to
  the target), the squared distance between the returned and the starting centre in [-1, 1]
  coordinates of the feature map (the original's `TransformedGridLoss` for a translation), mean
  over k;
- `skip`: the same for target -> frame t -> target, every t (the original's skip cycle);
- `similarity`: 1 - the affinity mass that each patch cell puts, in frame t, on the cell where
  the tracked patch places it (a soft count of inliers, as the original's `WeakInlierCountPool`
  on the skip affinity), mean over t. Unlike a plain feature-similarity term it cannot be
  minimised by constant features: those spread the affinity evenly.

Departures from the original, and why:
- The original regresses an affine transform (rotation + translation at a fixed 1/3 scale) from
  the affinity with a small conv net; here the transform is a translation read off the affinity by
  soft-argmax: no extra network to train, and each step has a closed form a test can check. So
  the patch is axis-aligned (no random +-45 degree rotation) and starts on whole cells.
- The tracked map is the encoder's last stage (stride 16 on R3D/MC3/R(2+1)D, 32 on Hara's and
  ResNet-I3D), not the original's res4 at stride 8: pick `crop_size` so that the map holds the
  patch (e.g. 112 px -> 7x7 on R3D-18; 240 px -> 8x8 on ResNet3D-50).
- `hist` (a query averaged over past crops) is 1, the original's default.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from vssl_jax.data import pipeline
from vssl_jax.models.layers import conv_init
from vssl_jax.objectives import Objective, register

# Under the square root of the norm: ReLU'd embeddings can be exactly zero, where the gradient of
# a plain x / ||x|| is NaN; 1e-6 changes the norm of any embedding longer than 1e-2 by < 1%.
_NORM_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class CycleSettings:
    """TimeCycle's hyper-parameters (`config.objective` keys of the same names)."""

    video_len: int = 4  # Frames the patch is tracked through, before the target frame.
    frame_gap: int = 2  # Source frames between consecutive cycle frames.
    patch_size: int = 3  # Side of the tracked patch, in feature-map cells.
    temperature: float = 512**-0.5  # Softmax temperature of the affinity (the original's T).
    embed_dim: int = 512  # Channels of `cycle_projection` (the original's afterconv1).
    # The patch starts in one of the top `motion_fraction` windows by frame difference (the
    # original: 10 of 49); 1.0 draws among all windows.
    motion_fraction: float = 10 / 49
    cycle_weight: float = 0.1
    skip_weight: float = 0.1
    similarity_weight: float = 1.0

    @classmethod
    def from_config(cls, config) -> CycleSettings:
        settings = cls(**{f.name: config.get(f.name, f.default) for f in dataclasses.fields(cls)})
        for name in ("video_len", "frame_gap", "patch_size", "embed_dim"):
            if getattr(settings, name) < 1:
                raise ValueError(f"objective.{name} must be >= 1, got {getattr(settings, name)}")
        if settings.temperature <= 0:
            raise ValueError(f"objective.temperature must be > 0, got {settings.temperature}")
        if not 0 < settings.motion_fraction <= 1:
            raise ValueError(
                f"objective.motion_fraction must be in (0, 1], got {settings.motion_fraction}"
            )
        return settings


def unit(x: jax.Array) -> jax.Array:
    """`x / ||x||` over the last axis in float32, smooth at zero (see `_NORM_EPS`)."""
    x = x.astype(jnp.float32)
    return x * lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + _NORM_EPS)


def cell_grid(height: int, width: int) -> jax.Array:
    """(row, col) of every cell of a `height` x `width` map, row-major. `[height * width, 2]`."""
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    return jnp.stack([rows, cols], axis=-1).reshape(-1, 2).astype(jnp.float32)


def patch_offsets(patch_size: int) -> jax.Array:
    """Offsets of a square patch's cells from its centre, row-major. `[patch_size ** 2, 2]`."""
    return cell_grid(patch_size, patch_size) - (patch_size - 1) / 2


def sample_cells(feature_map: jax.Array, points: jax.Array) -> jax.Array:
    """Bilinear samples of `feature_map` `[batch, h, w, d]` at `points` `[batch, n, 2]` (row, col
    in cell units; clamped to the map, i.e. border padding). Returns `[batch, n, d]`."""
    _, height, width, _ = feature_map.shape
    rows = jnp.clip(points[..., 0], 0, height - 1)
    cols = jnp.clip(points[..., 1], 0, width - 1)
    # The top-left neighbour stays one cell inside the map, so the weight of the other is in [0, 1].
    top = jnp.clip(jnp.floor(rows), 0, max(height - 2, 0))
    left = jnp.clip(jnp.floor(cols), 0, max(width - 2, 0))
    down, right = (rows - top)[..., None], (cols - left)[..., None]
    top, left = top.astype(jnp.int32), left.astype(jnp.int32)
    bottom, right_col = jnp.minimum(top + 1, height - 1), jnp.minimum(left + 1, width - 1)
    cell = jax.vmap(lambda fmap, r, c: fmap[r, c])
    return (
        (1 - down) * (1 - right) * cell(feature_map, top, left)
        + (1 - down) * right * cell(feature_map, top, right_col)
        + down * (1 - right) * cell(feature_map, bottom, left)
        + down * right * cell(feature_map, bottom, right_col)
    )


def crop(frame: jax.Array, centre: jax.Array, patch_size: int) -> jax.Array:
    """The unit embeddings of the patch centred at `centre` `[batch, 2]` in `frame`
    `[batch, h, w, d]`, bilinearly sampled. Returns `[batch, patch_size ** 2, d]`."""
    return unit(sample_cells(frame, centre[:, None] + patch_offsets(patch_size)))


def track(query: jax.Array, frame: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
    """Where the patch `query` `[batch, cells, d]` (unit cells) lies in `frame` `[batch, h, w, d]`.

    Returns (centre `[batch, 2]` (row, col), affinity `[batch, cells, h * w]`): each patch cell's
    softmax over the frame's cells; the centre is the mean of the cells' soft-argmax positions.
    """
    batch, height, width, dim = frame.shape
    scores = jnp.einsum("bpd,bnd->bpn", query, frame.reshape(batch, height * width, dim))
    affinity = jax.nn.softmax(scores / temperature, axis=-1)
    positions = affinity @ cell_grid(height, width)  # [batch, cells, 2]
    return positions.mean(axis=1), affinity


def _tent(grid: jax.Array, points: jax.Array) -> jax.Array:
    """Bilinear weight of every grid cell `[n, 2]` for every point `[batch, p, 2]`:
    `[batch, p, n]`, each point's weights summing to 1 inside the map."""
    distance = jnp.abs(grid[None, None] - points[:, :, None])
    return jnp.prod(jnp.maximum(0.0, 1.0 - distance), axis=-1)


def cycle_terms(
    embeddings: jax.Array,
    start_query: jax.Array,
    start: jax.Array,
    *,
    patch_size: int,
    temperature: float,
) -> dict[str, jax.Array]:
    """TimeCycle's loss terms, each a float32 scalar averaged over the batch.

    Args:
      embeddings: `[batch, frames, h, w, d]` unit embeddings; the last frame is the target.
      start_query: `[batch, patch_size ** 2, d]` unit embeddings of the patch, row-major.
      start: `[batch, 2]` centre (row, col) of the patch in the target frame, in cells.
      patch_size: side of the square patch in cells.
      temperature: the affinity's softmax temperature.

    Returns:
      {"cycle", "skip", "similarity"} (see the module docstring).
    """
    _, frames, height, width, _ = embeddings.shape
    last = frames - 1
    target = embeddings[:, last]
    # Cell units -> the [-1, 1] coordinates of the original's grid loss.
    scale = jnp.array([2.0 / max(height - 1, 1), 2.0 / max(width - 1, 1)])

    def distance(centre):
        return jnp.mean(jnp.sum(((centre - start) * scale) ** 2, axis=-1))

    def step(query, t):
        centre, affinity = track(query, embeddings[:, t], temperature)
        return centre, crop(embeddings[:, t], centre, patch_size), affinity

    backward = []  # The patch's embedding in frames last-1, ..., 0.
    query = start_query
    for t in range(last - 1, -1, -1):
        _, query, _ = step(query, t)
        backward.append(query)
    cycles = []
    for length in range(1, last + 1):
        query = backward[length - 1]  # In frame last - length.
        for t in range(last - length + 1, last + 1):
            centre, query, _ = step(query, t)
        cycles.append(distance(centre))
    skips, inliers = [], []
    grid, offsets = cell_grid(height, width), patch_offsets(patch_size)
    for t in range(last):
        centre, query, affinity = step(start_query, t)
        placed = _tent(grid, centre[:, None] + offsets)  # Where the tracked patch puts each cell.
        inliers.append(jnp.mean(jnp.sum(affinity * placed, axis=-1)))
        skips.append(distance(track(query, target, temperature)[0]))
    return {
        "cycle": jnp.mean(jnp.stack(cycles)),
        "skip": jnp.mean(jnp.stack(skips)),
        "similarity": 1.0 - jnp.mean(jnp.stack(inliers)),
    }


def new_projection(encoder: nnx.Module, embed_dim: int, rngs: nnx.Rngs) -> nnx.Linear:
    """The 1x1 projection of `encoder.feature_map`'s cells; checks the encoder has that map."""
    if not hasattr(encoder, "feature_map"):
        raise ValueError(
            f"TimeCycle tracks patches on `encoder.feature_map`, which {type(encoder).__name__} "
            "lacks; use a 3D ResNet (r3d_18, mc3_18, r2plus1d_*, resnet3d_*, i3d_resnet*)"
        )
    return nnx.Linear(
        encoder.feature_dim, embed_dim, use_bias=False, kernel_init=conv_init, rngs=rngs
    )


class TimeCycle(nnx.Module):
    """The encoder and the projection of its feature map (`cycle_projection`)."""

    def __init__(self, encoder: nnx.Module, embed_dim: int, *, rngs: nnx.Rngs):
        self.encoder = encoder
        self.cycle_projection = new_projection(encoder, embed_dim, rngs)


def build_model(encoder: nnx.Module, config, rngs: nnx.Rngs) -> TimeCycle:
    return TimeCycle(encoder, CycleSettings.from_config(config).embed_dim, rngs=rngs)


def _embed(model: nnx.Module, images: jax.Array, *, train: bool) -> jax.Array:
    """Unit embeddings of single images `[n, H, W, 3]`, each a one-frame clip: `[n, h, w, d]`."""
    # A one-frame clip keeps one time step in every 3D ResNet; the mean just drops that axis.
    maps = model.encoder.feature_map(images[:, None], train=train).mean(axis=1)
    return unit(nnx.relu(model.cycle_projection(maps.astype(jnp.float32))))


def frame_embeddings(model: nnx.Module, frames: jax.Array, *, train: bool) -> jax.Array:
    """Per-frame unit embeddings: `[batch, frames, H, W, 3]` -> `[batch, frames, h, w, d]`.

    Each frame goes through the encoder alone, so its map sees no other frame.
    """
    batch, length = frames.shape[:2]
    embeddings = _embed(model, frames.reshape(batch * length, *frames.shape[2:]), train=train)
    return embeddings.reshape(batch, length, *embeddings.shape[1:])


def motion_start(
    key: jax.Array, frames: jax.Array, map_size: tuple[int, int], settings: CycleSettings
) -> jax.Array:
    """Top-left cells `[batch, 2]` (row, col) of patches drawn uniformly among the windows of most
    motion: the `motion_fraction` of all patch windows of the `map_size` grid with the largest
    absolute difference between the last two frames of `frames` `[batch, L, H, W, 3]`.
    (The original draws among the 10 of 49 windows of most frame difference, so that the patch
    shows something that moves: a static patch closes every cycle by standing still.)"""
    height, width = map_size
    size = settings.patch_size
    batch = frames.shape[0]
    motion = jnp.abs(frames[:, -1] - frames[:, -2]).astype(jnp.float32).sum(axis=-1)
    cells = jax.image.resize(motion, (batch, height, width), "linear", antialias=True)
    windows = lax.reduce_window(cells, 0.0, lax.add, (1, size, size), (1, 1, 1), "VALID")
    windows = windows.reshape(batch, -1)  # [batch, (h - size + 1) * (w - size + 1)]
    keep = max(1, round(settings.motion_fraction * windows.shape[1]))
    threshold = jnp.sort(windows, axis=1)[:, -keep, None]
    index = jax.random.categorical(key, jnp.where(windows >= threshold, 0.0, -jnp.inf))
    columns = width - size + 1
    return jnp.stack([index // columns, index % columns], axis=-1)


def patch_pixels(
    frame: jax.Array, top_left: jax.Array, map_size: tuple[int, int], patch_size: int
) -> jax.Array:
    """The pixels under the patch whose top-left cell is `top_left` `[batch, 2]`, each cell
    standing for `H / h` x `W / w` pixels of `frame` `[batch, H, W, C]`. Returns
    `[batch, round(patch_size * H / h), round(patch_size * W / w), C]`."""
    _, height, width, channels = frame.shape
    cell = jnp.array([height / map_size[0], width / map_size[1]])
    size = (round(patch_size * height / map_size[0]), round(patch_size * width / map_size[1]))
    corner = jnp.round(top_left * cell).astype(jnp.int32)
    corner = jnp.minimum(corner, jnp.array([height - size[0], width - size[1]]))
    return jax.vmap(lambda f, c: lax.dynamic_slice(f, (c[0], c[1], 0), (*size, channels)))(
        frame, corner
    )


def patch_embeddings(
    model: nnx.Module, pixels: jax.Array, patch_size: int, *, train: bool
) -> jax.Array:
    """The patch's own unit embeddings, `[batch, patch_size ** 2, d]` row-major, from its pixels
    `[batch, ph, pw, 3]` encoded alone (as the original encodes its patch crop): the query then
    carries the patch's content only, not where it sat in the frame, which a frame's map can
    encode (zero padding) and which would let the tracker close cycles by standing still."""
    embeddings = _embed(model, pixels, train=train)
    batch, height, width, dim = embeddings.shape
    if (height, width) != (patch_size, patch_size):
        # Crop sizes that are not multiples of the encoder's stride round the patch's map.
        embeddings = unit(
            jax.image.resize(embeddings, (batch, patch_size, patch_size, dim), "linear")
        )
    return embeddings.reshape(batch, patch_size * patch_size, dim)


def timecycle_branch(
    model: nnx.Module, frames: jax.Array, *, train: bool, rngs: nnx.Rngs, settings: CycleSettings
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(weighted loss, its terms) on cycle `frames` `[batch, video_len + 1, H, W, 3]`.

    `model` is any wrapper with `encoder` and `cycle_projection` (this module's, or the
    multi-branch one)."""
    embeddings = frame_embeddings(model, frames, train=train)
    map_size = embeddings.shape[2:4]
    size = settings.patch_size
    if size > min(map_size):
        raise ValueError(
            f"TimeCycle: patch_size {size} does not fit the encoder's "
            f"{map_size[0]}x{map_size[1]} feature map; lower objective.patch_size or raise "
            "data.crop_size"
        )
    top_left = motion_start(rngs.augment(), frames, map_size, settings)
    query = patch_embeddings(
        model, patch_pixels(frames[:, -1], top_left, map_size, size), size, train=train
    )
    terms = cycle_terms(
        embeddings,
        query,
        top_left.astype(jnp.float32) + (size - 1) / 2,
        patch_size=size,
        temperature=settings.temperature,
    )
    value = (
        settings.cycle_weight * terms["cycle"]
        + settings.skip_weight * terms["skip"]
        + settings.similarity_weight * terms["similarity"]
    )
    return value, {f"{name}_loss": term for name, term in terms.items()}


def loss(model: TimeCycle, batch: dict, *, train: bool, rngs: nnx.Rngs, config):
    """The weighted TimeCycle loss on the batch's cycle frames; metrics: it and its terms."""
    settings = CycleSettings.from_config(config)
    value, terms = timecycle_branch(
        model, batch["video"], train=train, rngs=rngs, settings=settings
    )
    return value, {"loss": value, **terms}


def train_example(spec: pipeline.ClipSpec, config) -> pipeline.TrainClip:
    """The cycle's `video_len + 1` frames `frame_gap` apart, as a dense clip of that shape."""
    settings = CycleSettings.from_config(config)
    return pipeline.TrainClip(
        dataclasses.replace(
            spec, num_frames=settings.video_len + 1, frame_stride=settings.frame_gap
        )
    )


register(
    "timecycle",
    Objective(loss, build_model=build_model, train_example=train_example, final_eval="knn"),
)
