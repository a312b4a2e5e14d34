"""MoCo v2 (`moco`): InfoNCE against a NumPy reference, the momentum update and the queue after a
real train step, no gradient into the key network, the two-clip sampler, and the temporally
consistent colour augmentations."""

import functools
import pickle
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import simplejpeg
from flax import nnx

from configs import pretrain_moco_ucf101
from tests.conftest import tiny_config
from vssl_jax import objectives, optimizers, sharding, train
from vssl_jax.data import records, video_augment
from vssl_jax.data.pipeline import ClipSpec
from vssl_jax.models.heads import ClassifierHead
from vssl_jax.objectives import moco, nce
from vssl_jax.state import make_state_spec, normalized

# ---------------------------------------------------------------- Helpers shared with VTDL tests


class TinyEncoder(nnx.Module):
    """A zoo-shaped encoder that compiles in a blink: per-pixel linear map, mean over the clip,
    BatchNorm, ReLU. `features`: [batch, T, H, W, 3] -> [batch, 6]."""

    def __init__(self, rngs: nnx.Rngs):
        self.pixel = nnx.Linear(3, 6, rngs=rngs)
        self.norm = nnx.BatchNorm(6, rngs=rngs)
        self.feature_dim = 6
        self.head = ClassifierHead(6, 3, rngs=rngs)

    def features(self, video, *, train):
        pooled = self.pixel(video).mean(axis=(1, 2, 3))
        return nnx.relu(self.norm(pooled, use_running_average=not train))


def objective_config(name: str, **keys) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"name": name, **keys})


def tiny_model(build, config):
    return build(TinyEncoder(nnx.Rngs(0)), config, nnx.Rngs(params=1))


def tiny_train_step(model, objective_name: str, objective_config_):
    """The training loop's `train_step` (jitted) for `model`, with SGD; returns (state, step)."""
    config = tiny_config("")
    with config.unlocked():
        config.objective = objective_config_
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    tx = optax.sgd(0.1)
    spec = types.SimpleNamespace(graphdef=graphdef, tx=tx)
    step = functools.partial(
        train.train_step,
        spec=spec,
        config=config,
        objective=objectives.get(objective_name).loss,
        schedule=optax.constant_schedule(0.1),
    )
    state = {
        "params": params,
        "model_state": model_state,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.PRNGKey(0),
    }
    return config, state, jax.jit(step)


def frame_coded_record(num_frames: int, video_id: int, size: int = 40) -> records.VideoRecord:
    """A video whose frame t is flat (10 t + 5, 40 id + 20, 128): decoded pixels name the frame
    and the video they came from."""
    frames = []
    for t in range(num_frames):
        frame = np.empty((size, size, 3), np.uint8)
        frame[...] = (10 * t + 5, 40 * video_id + 20, 128)
        frames.append(simplejpeg.encode_jpeg(frame, 95))
    return records.VideoRecord(
        frames=frames,
        label=video_id,
        label_text=str(video_id),
        path=f"video_{video_id}",
        start_time=0.0,
        end_time=num_frames / 10,
        fps=10.0,
    )


def decode_codes(clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frame index, video id) of every frame of a `frame_coded_record` clip [T, H, W, 3]."""
    means = clip.reshape(clip.shape[0], -1, 3).mean(axis=1)
    return np.rint((means[:, 0] - 5) / 10).astype(int), np.rint((means[:, 1] - 20) / 40).astype(int)


def numpy_contrastive_loss(q, k, queue, temperature, negatives=None):
    """Hand-written InfoNCE: for each row, -log softmax of column 0 of
    [q.k, q.queue_0, ..., q.queue_{K-1}, (q.n)] / temperature."""
    q, k, queue = (np.asarray(a, np.float64) for a in (q, k, queue))
    total = 0.0
    for i in range(len(q)):
        scores = [float(np.dot(q[i], k[i]))]
        scores += [float(np.dot(q[i], queue[j])) for j in range(len(queue))]
        if negatives is not None:
            scores.append(float(np.dot(q[i], np.asarray(negatives, np.float64)[i])))
        scores = np.array(scores) / temperature
        top = scores.max()
        total += top + np.log(np.exp(scores - top).sum()) - scores[0]
    return total / len(q)


# ---------------------------------------------------------------- Loss


def unit_rows(rng, shape):
    x = rng.normal(size=shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_info_nce_is_zero_for_aligned_and_log_n_for_random_embeddings():
    rng = np.random.default_rng(0)
    basis = np.eye(16)
    # Aligned: each query equals its key, the queue holds the other (orthogonal) directions.
    q = jnp.asarray(basis[:4], jnp.float32)
    logits = moco.contrastive_logits(q, q, jnp.asarray(basis[4:], jnp.float32), 0.05)
    assert float(nce.info_nce(logits, jnp.zeros(4, jnp.int32)).mean()) < 1e-6
    # Random in 4096 dimensions at temperature 1: all scores ~ 0, loss ~ log(1 + K).
    q, k, queue = (
        jnp.asarray(unit_rows(rng, s), jnp.float32) for s in ((8, 4096), (8, 4096), (63, 4096))
    )
    logits = moco.contrastive_logits(q, k, queue, 1.0)
    loss = float(nce.info_nce(logits, jnp.zeros(8, jnp.int32)).mean())
    assert abs(loss - np.log(64)) < 0.05


def loss_and_embeddings(model, loss_fn, config):
    """A jitted (video, train) -> (loss, queries, keys, queue before, queue after): the
    embeddings come from the model as the loss left it (after any momentum update)."""
    graphdef, state = nnx.split(model)

    @functools.partial(jax.jit, static_argnums=1)
    def run(video, train):
        merged = nnx.merge(graphdef, state, copy=True)
        queue = merged.queue.get_value()
        loss, metrics = loss_fn(
            merged, {"video": video}, train=train, rngs=nnx.Rngs(0), config=config
        )
        queries = merged.queries(video[:, 0], train=train)
        keys = merged.keys(video[:, 1], train=train)
        return loss, metrics, queries, keys, queue, merged.queue.get_value()

    return run


def test_loss_matches_numpy_reference_before_and_after_the_momentum_update():
    config = objective_config("moco", queue_size=6, embedding_dim=4, momentum=0.5, temperature=0.2)
    model = tiny_model(moco.build_moco, config)
    # Move the query network away from the key network so the momentum update matters.
    nnx.update(
        model.projection,
        jax.tree.map(lambda a: a + 0.3, nnx.to_pure_dict(nnx.state(model.projection, nnx.Param))),
    )
    video = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (3, 2, 2, 4, 4, 3)), jnp.float32)
    run = loss_and_embeddings(model, moco.moco_loss, config)
    for train_mode in (False, True):
        loss, metrics, q, k, queue, queue_after = run(video, train_mode)
        reference = numpy_contrastive_loss(q, k, queue, 0.2)
        np.testing.assert_allclose(float(loss), reference, rtol=1e-5)
        assert float(metrics["loss"]) == float(loss)
    # Training enqueued the batch's keys (those of the updated key network) at rows 0..2.
    np.testing.assert_allclose(queue_after[:3], k, rtol=1e-6)
    np.testing.assert_array_equal(queue_after[3:], queue[3:])


def test_key_network_starts_as_a_copy_and_the_queue_as_unit_vectors():
    model = tiny_model(moco.build_moco, objective_config("moco", queue_size=5, embedding_dim=4))
    for query, key in (
        (model.encoder, model.key_encoder),
        (model.projection, model.key_projection),
    ):
        query_weights = nnx.to_pure_dict(nnx.state(query, nnx.Param))
        key_weights = nnx.to_pure_dict(nnx.state(key, moco.MomentumParam))
        jax.tree.map(np.testing.assert_array_equal, query_weights, key_weights)
    assert not jax.tree.leaves(nnx.state(model.key_encoder, nnx.Param))
    np.testing.assert_allclose(np.linalg.norm(model.queue.get_value(), axis=1), 1.0, rtol=1e-6)
    assert int(model.queue_pointer.get_value()) == 0


def test_train_step_moves_keys_by_momentum_and_enqueues_with_wraparound():
    """After one real train step: key = m key + (1 - m) query_before (elementwise); the queue
    holds the batch's keys from the pointer on, wrapping past the end; params moved."""
    momentum, queue_size, batch_size = 0.9, 5, 3
    config_ = objective_config(
        "moco", queue_size=queue_size, embedding_dim=4, momentum=momentum, temperature=0.2
    )
    model = tiny_model(moco.build_moco, config_)
    rng = np.random.default_rng(2)
    # Key weights different from the query's, and a pointer near the end of the queue.
    for key in (model.key_encoder, model.key_projection):
        weights = nnx.to_pure_dict(nnx.state(key, moco.MomentumParam))
        nnx.update(key, jax.tree.map(lambda a: a + rng.normal(size=a.shape), weights))
    model.queue_pointer.set_value(jnp.asarray(queue_size - 1, jnp.int32))
    config, state, step = tiny_train_step(model, "moco", config_)
    batch = {"video": jnp.asarray(rng.integers(0, 256, (batch_size, 2, 2, 4, 4, 3), np.uint8))}
    before = jax.device_get(state)

    new_state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    after = jax.device_get(new_state)

    old_query = before["params"]
    for name in ("encoder", "projection"):
        expected = jax.tree.map(
            lambda k, q: momentum * np.asarray(k) + (1 - momentum) * np.asarray(q),
            nnx.to_pure_dict(before["model_state"][f"key_{name}"].filter(moco.MomentumParam)),
            nnx.to_pure_dict(old_query[name]),
        )
        got = nnx.to_pure_dict(after["model_state"][f"key_{name}"].filter(moco.MomentumParam))
        jax.tree.map(
            lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7), got, expected
        )

    # The keys the step enqueued: the updated key network on the normalised key clips.
    graphdef = nnx.split(model, nnx.Param, ...)[0]

    @jax.jit
    def keys_of(params, model_state, video):
        return nnx.merge(graphdef, params, model_state, copy=True).keys(video, train=True)

    keys = keys_of(
        new_state["params"], new_state["model_state"], normalized(batch, config)["video"][:, 1]
    )
    queue_before = np.asarray(before["model_state"]["queue"].get_value())
    queue_after = np.asarray(after["model_state"]["queue"].get_value())
    rows = [(queue_size - 1 + i) % queue_size for i in range(batch_size)]  # 4, 0, 1
    np.testing.assert_allclose(queue_after[rows], keys, rtol=1e-5, atol=1e-6)
    untouched = [r for r in range(queue_size) if r not in rows]
    np.testing.assert_array_equal(queue_after[untouched], queue_before[untouched])
    assert (
        int(after["model_state"]["queue_pointer"].get_value())
        == (queue_size - 1 + batch_size) % queue_size
    )
    # The key network's BatchNorm statistics moved with its own (train-mode) pass.
    assert not np.allclose(
        after["model_state"]["key_encoder"]["norm"]["mean"].get_value(),
        before["model_state"]["key_encoder"]["norm"]["mean"].get_value(),
    )
    # Gradients moved the query network.
    for path in (("encoder", "pixel", "kernel"), ("projection", "layers", 0, "kernel")):
        a, b = before["params"], after["params"]
        for part in path:
            a, b = a[part], b[part]
        assert not np.allclose(a.get_value(), b.get_value())


def test_no_gradient_reaches_the_key_network_or_the_queue():
    config = objective_config("moco", queue_size=4, embedding_dim=4)
    model = tiny_model(moco.build_moco, config)
    # Every float variable that is not a Param: key weights, BatchNorm statistics, the queue.
    is_float = lambda _, v: jnp.issubdtype(v.get_value().dtype, jnp.floating)  # noqa: E731
    graphdef, params, floats, rest = nnx.split(model, nnx.Param, is_float, ...)
    video = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, (2, 2, 2, 4, 4, 3)), jnp.float32)

    @jax.jit
    def grads(params, floats):
        def loss_of(params, floats):
            merged = nnx.merge(graphdef, params, floats, rest, copy=True)
            batch = {"video": video}
            return moco.moco_loss(merged, batch, train=True, rngs=nnx.Rngs(0), config=config)[0]

        return jax.grad(loss_of, argnums=(0, 1))(params, floats)

    param_grads, state_grads = grads(params, floats)
    assert "queue" in state_grads and "key_encoder" in state_grads
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(param_grads["projection"]))
    for path, grad in jax.tree_util.tree_flatten_with_path(state_grads)[0]:
        assert float(jnp.abs(grad).max()) == 0.0, sharding.path_string(path)


# ---------------------------------------------------------------- Views


def test_other_start_keeps_its_distance_and_loops_short_videos():
    rng = np.random.default_rng(4)
    for _ in range(200):
        start = int(rng.integers(0, 13))
        other = moco.other_start(20, 4, 2, start, 2, rng)  # Starts 0..13 fit.
        assert 0 <= other <= 13 and abs(other - start) >= 2
    # Only one start fits a 7-frame video: move by a third of it, the clip loops.
    assert moco.other_start(7, 4, 2, 0, 1, rng) == 2
    np.testing.assert_array_equal(moco.clip_indices(2, 7, 4, 2), [2, 4, 6, 1])


def test_two_clips_come_from_the_same_video_at_different_times():
    spec = ClipSpec(num_frames=4, frame_stride=2, crop_size=32, flip=False)
    clips = moco.MoCoClips(
        spec, color_jitter=(0.4, 0.4, 0.4, 0.1), jitter_prob=0.0, grayscale_prob=0.0
    )
    rng = np.random.default_rng(5)
    for video_id in range(4):
        example = clips(frame_coded_record(16, video_id), rng)
        assert example["video"].shape == (2, 4, 32, 32, 3) and example["video"].dtype == np.uint8
        assert int(example["label"]) == video_id
        (first, ids_1), (second, ids_2) = (decode_codes(v) for v in example["video"])
        assert set(ids_1) == set(ids_2) == {video_id}
        assert first[0] != second[0]
        np.testing.assert_array_equal(np.diff(first), 2)
        np.testing.assert_array_equal(np.diff(second), 2)
    # The default recipe (jitter p=0.8, grey p=0.2) keeps shape and dtype.
    example = moco.moco_clips(spec, objective_config("moco"))(frame_coded_record(16, 0), rng)
    assert example["video"].shape == (2, 4, 32, 32, 3) and example["video"].dtype == np.uint8


# ---------------------------------------------------------------- Colour augmentations


def reference_jitter(video, params: video_augment.JitterParams):
    """Plain loops over pixels; contrast uses the whole clip's mean luma."""
    x = video.astype(np.float64)
    luma = np.array([0.299, 0.587, 0.114])
    angle = 2 * np.pi * params.hue
    axis = np.ones(3) / np.sqrt(3)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    hue = (
        np.cos(angle) * np.eye(3)
        + np.sin(angle) * cross
        + (1 - np.cos(angle)) * np.outer(axis, axis)
    )
    for op in params.order:
        if op == video_augment.BRIGHTNESS:
            x = x * params.brightness
        elif op == video_augment.CONTRAST:
            mean = np.mean(x @ luma)
            x = params.contrast * x + (1 - params.contrast) * mean
        else:
            out = np.empty_like(x)
            for index in np.ndindex(x.shape[:-1]):
                pixel = x[index]
                if op == video_augment.SATURATION:
                    grey = pixel @ luma
                    out[index] = params.saturation * pixel + (1 - params.saturation) * grey
                else:
                    out[index] = hue @ pixel
            x = out
        x = np.clip(x, 0, 255)
    return np.rint(x).astype(np.uint8)


def test_color_jitter_matches_a_pixel_loop_reference():
    rng = np.random.default_rng(6)
    video = rng.integers(0, 256, (3, 5, 4, 3), np.uint8)
    for _ in range(5):
        params = video_augment.sample_jitter(rng, 0.5, 0.5, 0.5, 0.5)
        got = video_augment.color_jitter(video, params).astype(int)
        assert np.abs(got - reference_jitter(video, params)).max() <= 1  # Float32 rounding.


def test_color_jitter_is_the_same_colour_map_on_every_frame():
    """Frames that are spatial shifts of frame 0 stay shifts of the jittered frame 0."""
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, (6, 6, 3), np.uint8)
    video = np.stack([np.roll(frame, t, axis=1) for t in range(4)])
    for _ in range(5):
        out = video_augment.color_jitter(
            video, video_augment.sample_jitter(rng, 0.8, 0.8, 0.8, 0.5)
        )
        for t in range(4):
            np.testing.assert_array_equal(out[t], np.roll(out[0], t, axis=1))
        assert not np.array_equal(out, video)


def test_hue_turns_primaries_and_keeps_greys_and_grayscale_is_luma():
    pixels = np.array([[[[200, 0, 0], [0, 90, 0], [70, 70, 70]]]], np.uint8)
    turned = video_augment.color_jitter(pixels, video_augment.JitterParams(hue=1 / 3))
    np.testing.assert_array_equal(turned, [[[[0, 200, 0], [0, 0, 90], [70, 70, 70]]]])
    grey = video_augment.grayscale(pixels)
    np.testing.assert_array_equal(grey[..., 0], np.rint(pixels @ [0.299, 0.587, 0.114]))
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


# ---------------------------------------------------------------- The real train step


@pytest.fixture
def quick_compile(monkeypatch):
    """Unoptimised XLA and native 3D convs: this step compiles once and runs once."""
    monkeypatch.setenv("VSSL_JAX_CONV3D", "native")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def test_one_train_step_of_r3d_18(quick_compile):
    config = tiny_config("", **{"model.name": "r3d_18"})
    with config.unlocked():
        config.objective = objective_config("moco", queue_size=16, embedding_dim=8)
    spec = make_state_spec(config, 2, sharding.make_mesh(config.mesh))
    assert objectives.get("moco").final_eval == "knn"
    state = {
        "params": random_arrays(spec.abstract["params"]),
        "model_state": random_arrays(spec.abstract["model_state"]),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.PRNGKey(0),
    }
    state["opt_state"] = spec.tx.init(state["params"])
    step = functools.partial(
        train.train_step,
        spec=spec,
        config=config,
        objective=objectives.get("moco").loss,
        schedule=optimizers.learning_rate_schedule(config.optimizer, config.num_train_steps),
    )
    rng = np.random.default_rng(8)
    batch = {
        "video": jnp.asarray(rng.integers(0, 256, (4, 2, 4, 32, 32, 3), np.uint8)),
        "label": jnp.zeros((4,), jnp.int32),
    }
    new_state, metrics = jax.jit(step)(state, batch)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0
    assert np.isfinite(float(metrics["grad_norm"])) and float(metrics["grad_norm"]) > 0
    assert not np.allclose(
        new_state["params"]["encoder"]["stem_conv"]["kernel"].get_value(),
        state["params"]["encoder"]["stem_conv"]["kernel"].get_value(),
    )
    assert "key_encoder" not in new_state["params"] and "key_encoder" in new_state["model_state"]


def random_arrays(abstract):
    """Random values for an abstract state (compiling the models' initialisers is slower than
    the step): kernels N(0, 1/fan_in), norm scales and variances 1, the rest 0; the queue unit
    rows."""
    rng = np.random.default_rng(0)

    def value(path, leaf):
        name = sharding.path_string(path)
        if name == "queue":
            return jnp.asarray(unit_rows(rng, leaf.shape), leaf.dtype)
        last = name.rsplit("/", 1)[-1]
        if last in ("scale", "var"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if last in ("bias", "mean") or leaf.ndim < 2:
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return jnp.asarray(rng.normal(0, fan_in**-0.5, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(value, abstract)


def test_recipe_config_and_views_pickle_for_grain_workers():
    config = pretrain_moco_ucf101.get_config(None)
    assert set(config.objective.keys()) == {
        "name",
        "embedding_dim",
        "head_layers",
        "queue_size",
        "momentum",
        "temperature",
        "color_jitter",
        "jitter_prob",
        "grayscale_prob",
    }
    assert config.objective.queue_size < 9537  # Below one epoch of keys.
    smoke = pretrain_moco_ucf101.get_config("smoke")
    spec = ClipSpec(num_frames=4, frame_stride=2, crop_size=32, flip=True)
    views = objectives.get("moco").train_example(spec, smoke.objective)
    restored = pickle.loads(pickle.dumps(views))
    video = frame_coded_record(12, 1)
    np.testing.assert_array_equal(
        restored(video, np.random.default_rng(9))["video"],
        views(video, np.random.default_rng(9))["video"],
    )
