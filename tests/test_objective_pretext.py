"""Pretext-task objectives: arrow of time, TimeCycle and the multi-branch recipe.

The math is checked against NumPy re-implementations written here (direction cross-entropy, the
tracker's affinity / soft-argmax step and bilinear crop, the whole set of cycle terms), on
hand-made feature maps and frames whose motion is known (tracking, cycles, the choice of the
patch), and each objective runs one jitted step of the training loop.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from tests.conftest import tiny_config
from tests.test_models import host_random, quick_compile  # noqa: F401  (a fixture)
from vssl_jax import objectives, optimizers, sharding, train
from vssl_jax.data import pipeline, transforms
from vssl_jax.models import heads
from vssl_jax.objectives import arrow_of_time, multibranch, supervised, timecycle
from vssl_jax.state import make_state_spec

# ---------------------------------------------------------------- NumPy references


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_unit(x):
    return x / np.sqrt((x * x).sum(-1, keepdims=True))


def np_grid(h, w):
    return np.array([(r, c) for r in range(h) for c in range(w)], np.float64)


def np_bilinear(fmap, point):
    """fmap [h, w, d] at one (row, col), coordinates clamped to the map."""
    h, w, _ = fmap.shape
    r, c = np.clip(point[0], 0, h - 1), np.clip(point[1], 0, w - 1)
    out = 0.0
    for rr in range(h):
        for cc in range(w):
            weight = max(0.0, 1 - abs(rr - r)) * max(0.0, 1 - abs(cc - c))
            out = out + weight * fmap[rr, cc]
    return out


def np_track(query, frame, temperature):
    """query [p, d], frame [h, w, d] -> (centre [2], affinity [p, h*w])."""
    h, w, d = frame.shape
    affinity = np_softmax(query @ frame.reshape(h * w, d).T / temperature)
    return (affinity @ np_grid(h, w)).mean(0), affinity


def np_crop(frame, centre, p):
    offsets = np_grid(p, p) - (p - 1) / 2
    return np_unit(np.stack([np_bilinear(frame, centre + o) for o in offsets]))


def np_cycle_terms(embeddings, q0, start, p, temperature):
    """One example: embeddings [frames, h, w, d] (last = target), patch query q0 [p*p, d],
    start [2]."""
    frames, h, w, _ = embeddings.shape
    last = frames - 1
    scale = np.array([2 / (h - 1), 2 / (w - 1)])

    def dist(centre):
        return (((centre - start) * scale) ** 2).sum()

    def step(query, t):
        centre, affinity = np_track(query, embeddings[t], temperature)
        return centre, np_crop(embeddings[t], centre, p), affinity

    cycles = []
    for length in range(1, last + 1):
        query = q0
        for t in range(last - 1, last - length - 1, -1):  # Backward to frame last - length.
            _, query, _ = step(query, t)
        for t in range(last - length + 1, last + 1):  # Forward to the target.
            centre, query, _ = step(query, t)
        cycles.append(dist(centre))
    skips, inliers = [], []
    offsets = np_grid(p, p) - (p - 1) / 2
    grid = np_grid(h, w)
    for t in range(last):
        centre, query, affinity = step(q0, t)
        placed = centre + offsets  # [p*p, 2]
        tent = np.prod(np.maximum(0, 1 - np.abs(grid[None] - placed[:, None])), axis=-1)
        inliers.append((affinity * tent).sum(-1).mean())
        skips.append(dist(np_track(query, embeddings[last], temperature)[0]))
    return np.mean(cycles), np.mean(skips), 1 - np.mean(inliers)


# Jitted once per (patch_size, temperature): op-by-op dispatch of the unrolled cycles is slower.
cycle_terms = jax.jit(timecycle.cycle_terms, static_argnames=("patch_size", "temperature"))


def distinct_map(h, w, rng):
    """A map whose cells are random unit vectors (distinct: near-orthogonal in 64 dims)."""
    return np_unit(rng.normal(size=(h, w, 64)))


# ---------------------------------------------------------------- Arrow of time


def test_direction_loss_matches_numpy():
    logits = np.array([[2.0, -1.0], [0.5, 0.7], [-3.0, 1.0], [0.2, 0.1]], np.float32)
    target = np.array([0, 0, 1, 1], np.int32)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -log_p[np.arange(4), target].mean()
    loss, accuracy = arrow_of_time.direction_loss(jnp.asarray(logits), jnp.asarray(target))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    assert float(accuracy) == 0.5  # Rows 0 and 2 right, 1 and 3 wrong.


def test_reverse_randomly_reverses_exactly_the_flagged_clips():
    video = jnp.arange(64 * 5, dtype=jnp.float32).reshape(64, 5, 1, 1, 1)
    out, target = arrow_of_time.reverse_randomly(video, jax.random.key(0))
    out, target = np.asarray(out), np.asarray(target)
    expected = np.where(target[:, None, None, None, None] == 1, np.asarray(video)[:, ::-1], video)
    np.testing.assert_array_equal(out, expected)
    assert 16 < target.sum() < 48  # About half.


# ---------------------------------------------------------------- TimeCycle tracker


def test_track_step_matches_numpy():
    rng = np.random.default_rng(0)
    query = np_unit(rng.normal(size=(2, 4, 8)))
    frame = np_unit(rng.normal(size=(2, 3, 5, 8)))
    centre, affinity = timecycle.track(jnp.asarray(query), jnp.asarray(frame), 0.3)
    for b in range(2):
        want_centre, want_affinity = np_track(query[b], frame[b], 0.3)
        np.testing.assert_allclose(np.asarray(affinity[b]), want_affinity, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(centre[b]), want_centre, rtol=1e-5)


def test_crop_matches_numpy_bilinear_including_the_border():
    rng = np.random.default_rng(1)
    frame = rng.normal(size=(2, 4, 5, 6))
    centre = np.array([[1.3, 2.6], [2.9, 3.8]])  # The second patch sticks out of the map.
    got = np.asarray(timecycle.crop(jnp.asarray(frame), jnp.asarray(centre), 3))
    for b in range(2):
        np.testing.assert_allclose(got[b], np_crop(frame[b], centre[b], 3), rtol=1e-5)


def test_tracker_follows_a_known_motion():
    """Frame 2 is frame 1 moved by (+1, +2) cells: the patch is found there, and cropped."""
    rng = np.random.default_rng(2)
    first = distinct_map(7, 8, rng)
    second = np.roll(first, (1, 2), axis=(0, 1))
    start = jnp.array([[2.0, 3.0]])
    query = timecycle.crop(jnp.asarray(first[None]), start, 3)
    centre, _ = timecycle.track(query, jnp.asarray(second[None]), 0.02)
    np.testing.assert_allclose(np.asarray(centre), [[3.0, 5.0]], atol=1e-3)
    moved = timecycle.crop(jnp.asarray(second[None]), centre, 3)
    np.testing.assert_allclose(np.asarray(moved), np.asarray(query), atol=1e-3)


@pytest.mark.usefixtures("quick_compile")
def test_a_consistent_video_closes_every_cycle_and_a_shuffled_one_does_not():
    """A map sliding one cell right per frame: tracking is exact, every term ~0. The same frames
    with their cells shuffled (no correspondence): the patch does not come back."""
    rng = np.random.default_rng(3)
    base = distinct_map(6, 9, rng)
    frames = np.stack([np.roll(base, t, axis=1) for t in range(4)])[None]  # [1, 4, 6, 9, 64]
    start = jnp.array([[2.0, 5.0]])  # In the target (t = 3); at column 2 in frame 0: inside.
    query = timecycle.crop(jnp.asarray(frames[:, -1]), start, 3)  # The patch's own content.
    terms = cycle_terms(jnp.asarray(frames), query, start, patch_size=3, temperature=0.02)
    for name in ("cycle", "skip", "similarity"):
        assert float(terms[name]) < 1e-4, (name, float(terms[name]))

    shuffled = frames.copy()
    for t in range(3):
        cells = shuffled[0, t].reshape(-1, 64)
        shuffled[0, t] = rng.permutation(cells).reshape(6, 9, 64)
    terms = cycle_terms(jnp.asarray(shuffled), query, start, patch_size=3, temperature=0.02)
    assert float(terms["cycle"]) > 0.05 and float(terms["similarity"]) > 0.5


@pytest.mark.usefixtures("quick_compile")
def test_cycle_terms_match_numpy_and_have_finite_gradients():
    rng = np.random.default_rng(4)
    embeddings = np_unit(rng.normal(size=(2, 4, 4, 5, 16)))  # [batch, frames, h, w, d]
    start = np.array([[1.0, 2.0], [2.5, 1.5]])  # patch 3 (odd), then patch 2 below.
    for patch, centres in ((3, start[:1].repeat(2, 0)), (2, start[1:].repeat(2, 0))):
        query = np_unit(rng.normal(size=(2, patch * patch, 16)))  # A patch encoded on its own.
        got = cycle_terms(
            jnp.asarray(embeddings),
            jnp.asarray(query),
            jnp.asarray(centres),
            patch_size=patch,
            temperature=0.2,
        )
        want = np.mean(
            [np_cycle_terms(embeddings[b], query[b], centres[b], patch, 0.2) for b in range(2)],
            axis=0,
        )
        np.testing.assert_allclose(
            [float(got["cycle"]), float(got["skip"]), float(got["similarity"])], want, rtol=1e-4
        )

    def total(x, q):
        terms = cycle_terms(
            x, q, jnp.asarray(start[:1]).repeat(2, 0), patch_size=3, temperature=0.2
        )
        return terms["cycle"] + terms["skip"] + terms["similarity"]

    query = jnp.asarray(np_unit(rng.normal(size=(2, 9, 16))), jnp.float32)
    grads = jax.jit(jax.grad(total, argnums=(0, 1)))(jnp.asarray(embeddings, jnp.float32), query)
    for grad in grads:
        assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).max() > 0
    # Exactly-zero (ReLU'd) embeddings keep the normalisation's gradient finite.
    zero = jax.grad(lambda x: timecycle.unit(x).sum())(jnp.zeros((3, 4)))
    assert np.isfinite(np.asarray(zero)).all()


def test_the_patch_starts_where_the_frames_move():
    """Motion only under one window: with the top 1/9 of the 3x3 windows of a 4x4 grid (patch 2)
    every draw takes it; without motion the draws spread over all nine windows."""
    frames = np.zeros((64, 2, 16, 16, 3), np.float32)
    frames[:, 1, 8:16, 4:12] = 1.0  # Cells (2..3, 1..2): the window with top-left (2, 1).
    settings = timecycle.CycleSettings(patch_size=2, motion_fraction=1 / 9)
    top_left = timecycle.motion_start(jax.random.key(0), jnp.asarray(frames), (4, 4), settings)
    assert (np.asarray(top_left) == [2, 1]).all()
    still = timecycle.motion_start(
        jax.random.key(0), jnp.zeros((64, 2, 16, 16, 3)), (4, 4), settings
    )
    assert len({tuple(t) for t in np.asarray(still)}) == 9


def test_patch_pixels_are_the_cells_pixels():
    frame = np.random.default_rng(8).integers(0, 255, (2, 64, 48, 3)).astype(np.float32)
    top_left = np.array([[1, 0], [3, 2]])  # On a 4x3 map: cells of 16x16 pixels.
    got = np.asarray(timecycle.patch_pixels(jnp.asarray(frame), jnp.asarray(top_left), (4, 3), 1))
    np.testing.assert_array_equal(got[0], frame[0, 16:32, 0:16])
    np.testing.assert_array_equal(got[1], frame[1, 48:64, 32:48])


def test_timecycle_sampler_gives_the_cycle_frames(tiny_dataset):
    """`video_len + 1` frames `frame_gap` apart, one crop for all: found in the decoded video."""
    config = ml_collections.ConfigDict({"name": "timecycle", "video_len": 3, "frame_gap": 3})
    spec = pipeline.ClipSpec(num_frames=4, frame_stride=2, crop_size=32)
    sample = objectives.get("timecycle").train_example(spec, config)
    record = pipeline.split_source(tiny_dataset, "train")[0]
    out = sample(record, np.random.default_rng(5))
    assert out["video"].shape == (4, 32, 32, 3) and out["video"].dtype == np.uint8
    full = transforms.decode_frames(record.frames, np.arange(record.num_frames), record.path)
    matches = [
        (start, top, left)
        for start in range(record.num_frames - 9)
        for top in range(9)
        for left in range(9)
        if np.array_equal(
            full[start : start + 10 : 3, top : top + 32, left : left + 32], out["video"]
        )
    ]
    assert matches and int(out["label"]) == record.label


# ---------------------------------------------------------------- Multi-branch


def test_cycle_frames_are_every_frame_gap_th_clip_frame():
    video = jnp.arange(9.0).reshape(1, 9, 1, 1, 1)
    settings = timecycle.CycleSettings(video_len=2, frame_gap=4)
    np.testing.assert_array_equal(
        np.asarray(multibranch.cycle_frames(video, settings)).ravel(), [0, 4, 8]
    )
    with pytest.raises(ValueError, match="raise data.num_frames"):
        multibranch.cycle_frames(video[:, :8], settings)


class PixelEncoder(nnx.Module):
    """A test double of a zoo 3D ResNet (same methods), cheap to compile: a per-pixel linear
    map average-pooled to 4x4 cells; pooled features weight frames by position, so that a
    reversed clip has other features."""

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Linear(3, 6, rngs=rngs)
        self.norm = nnx.BatchNorm(6, rngs=rngs)
        self.feature_dim = 6
        self.head = heads.ClassifierHead(6, num_classes, init_std=1.0, rngs=rngs)

    def feature_map(self, video, *, train):
        b, t, h, w, _ = video.shape
        x = nnx.relu(self.norm(self.embed(video), use_running_average=not train))
        x = x.reshape(b, t, 4, h // 4, 4, w // 4, 6)
        return x.mean(axis=(3, 5))  # [b, t, 4, 4, 6]

    def features(self, video, *, train):
        ramp = jnp.arange(1.0, video.shape[1] + 1)[None, :, None]
        return (self.feature_map(video, train=train).mean(axis=(2, 3)) * ramp).mean(axis=1)

    def __call__(self, video, *, train, rngs=None):
        return self.head(self.features(video, train=train), train=train, rngs=rngs)


@pytest.mark.usefixtures("quick_compile")
def test_multibranch_loss_is_the_weighted_sum_of_the_three_branches():
    """Total == ce + w_bin * arrow + w_cycle * timecycle, and each branch equals its own function
    run with the same random streams (augment: arrow first, then TimeCycle)."""
    config = ml_collections.ConfigDict(
        {
            "name": "multibranch",
            "binary_class_weight": 0.7,
            "timecycle_weight": 3.0,
            "video_len": 2,
            "frame_gap": 2,
            "patch_size": 2,
            "embed_dim": 8,
        }
    )
    settings = timecycle.CycleSettings.from_config(config)
    model = multibranch.build_model(PixelEncoder(3, rngs=nnx.Rngs(0)), config, nnx.Rngs(1))
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(6)
    batch = {
        "video": jnp.asarray(rng.normal(size=(8, 6, 16, 16, 3)), jnp.float32),
        "label": jnp.array([0, 2, 1, 1, 0, 2, 2, 1], jnp.int32),
    }

    def running_mean(model):
        return model.encoder.norm.mean[...]

    @jax.jit
    def both(state):
        model = nnx.merge(graphdef, state, copy=True)
        total, metrics = multibranch.loss(
            model, batch, train=True, rngs=nnx.Rngs(dropout=0, augment=1), config=config
        )
        statistics = running_mean(model)
        model = nnx.merge(graphdef, state, copy=True)
        rngs = nnx.Rngs(dropout=0, augment=1)
        ce, ce_metrics = supervised.classification_loss(
            model.encoder, batch, train=True, rngs=rngs, config=config
        )
        arrow = arrow_of_time.arrow_of_time_branch(model, batch["video"], train=True, rngs=rngs)
        clip_statistics = running_mean(model)
        cycle, _ = timecycle.timecycle_branch(
            model, batch["video"][:, 0:5:2], train=True, rngs=rngs, settings=settings
        )
        branches = (ce, ce_metrics["accuracy"], *arrow, cycle)
        return total, metrics, branches, (statistics, clip_statistics, running_mean(model))

    total, metrics, branches, statistics = jax.device_get(both(state))
    # BatchNorm's running averages are those of the clip branches, not of TimeCycle's frames.
    after_multibranch, after_clips, after_cycle = statistics
    np.testing.assert_allclose(after_multibranch, after_clips, rtol=1e-6)
    assert not np.allclose(after_clips, after_cycle)
    ce, accuracy, arrow, arrow_accuracy, cycle = branches
    np.testing.assert_allclose(metrics["classification_loss"], ce, rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], accuracy)
    np.testing.assert_allclose(metrics["arrow_of_time_loss"], arrow, rtol=1e-6)
    np.testing.assert_allclose(metrics["arrow_of_time_accuracy"], arrow_accuracy)
    np.testing.assert_allclose(metrics["timecycle_loss"], cycle, rtol=1e-6)
    np.testing.assert_allclose(total, ce + 0.7 * arrow + 3.0 * cycle, rtol=1e-6)
    np.testing.assert_allclose(
        cycle,
        0.1 * metrics["cycle_loss"] + 0.1 * metrics["skip_loss"] + metrics["similarity_loss"],
        rtol=1e-6,
    )
    assert metrics["loss"] == total
    # The branches are not interchangeable: a check above would notice a swapped weight.
    assert len({round(float(v), 4) for v in (ce, arrow, cycle)}) == 3


# ---------------------------------------------------------------- One training step each

OBJECTIVES = {
    "arrow_of_time": {},
    "timecycle": {"video_len": 2, "frame_gap": 2, "patch_size": 2, "embed_dim": 8},
    "multibranch": {"video_len": 1, "frame_gap": 2, "patch_size": 2, "embed_dim": 8},
}
# Frames per clip in the batch: TimeCycle's sampler gives video_len + 1.
FRAMES = {"arrow_of_time": 4, "timecycle": 3, "multibranch": 4}


@pytest.mark.usefixtures("quick_compile")
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_one_train_step(name):
    """The training loop's jitted `train_step`: finite loss and gradient; every parameter moves
    except, in the pretext tasks alone, the encoder's unused classifier."""
    config = tiny_config("", **{"model.width": 4, "data.crop_size": 48})
    with config.unlocked():
        config.objective = ml_collections.ConfigDict({"name": name, **OBJECTIVES[name]})
    spec = make_state_spec(config, 3, sharding.make_mesh(config.mesh))
    step = functools.partial(
        train.train_step,
        spec=spec,
        config=config,
        objective=objectives.get(name).loss,
        schedule=optimizers.learning_rate_schedule(config.optimizer, config.num_train_steps),
    )
    params = host_random(spec.abstract["params"])
    state = {
        "params": params,
        "model_state": host_random(spec.abstract["model_state"]),
        "opt_state": spec.tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.PRNGKey(0),
    }
    rng = np.random.default_rng(7)
    batch = {
        "video": jnp.asarray(rng.integers(0, 256, (2, FRAMES[name], 48, 48, 3), np.uint8)),
        "label": jnp.asarray([0, 2], jnp.int32),
    }
    before = jax.tree.map(np.asarray, state["params"])
    new_state, metrics = jax.jit(step)(state, batch)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["nonfinite"]) == 0
    after = jax.tree.map(np.asarray, new_state["params"])
    unchanged = {
        sharding.path_string(path)
        for (path, a), b in zip(
            jax.tree_util.tree_flatten_with_path(before)[0], jax.tree.leaves(after), strict=True
        )
        if np.array_equal(a, b)
    }
    pretext = name != "multibranch"  # The encoder's classifier is not part of the loss.
    allowed = {"encoder/head/bias", "encoder/head/kernel"} if pretext else set()
    assert unchanged <= allowed, unchanged
