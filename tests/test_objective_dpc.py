"""DPC / CPCTrans: the dense InfoNCE, the ConvGRU and the autoregressive rollout against NumPy
references written here; predictions never read the blocks they predict; one jitted train step
per aggregator; the block clip sampler and DPC's frame-wise colour augmentation."""

import functools
import importlib
import pickle

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import simplejpeg
from flax import nnx

from tests.conftest import tiny_config
from vssl_jax import models, objectives, optimizers, sharding, train
from vssl_jax.data import pipeline, records
from vssl_jax.objectives import dpc
from vssl_jax.state import make_state_spec

# ---------------------------------------------------------------- NumPy references


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logsumexp(x):
    top = x.max()
    return top + np.log(np.exp(x - top).sum())


def _dense(layer, x):
    return x @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])


def _gru_reference(cell, x, h):
    """The GRU of DPC's `ConvGRUCell.forward` (1x1 kernels), gate by gate."""
    xh = np.concatenate([x, h], axis=-1)
    update = _sigmoid(_dense(cell.update_gate, xh))
    reset = _sigmoid(_dense(cell.reset_gate, xh))
    out = np.tanh(_dense(cell.out_gate, np.concatenate([x, reset * h], axis=-1)))
    return h * (1 - update) + out * update


def _phi_reference(predictor, x):
    return _dense(predictor.out, np.maximum(_dense(predictor.hidden, x), 0))


def _dense_nce_reference(pred, target, temperature, normalize):
    """Loops over every (video, step, y, x) of the predictions and of the targets."""
    if normalize:
        pred = pred / np.linalg.norm(pred, axis=-1, keepdims=True)
        target = target / np.linalg.norm(target, axis=-1, keepdims=True)
    cells = list(np.ndindex(*pred.shape[:-1]))
    losses, hits = [], []
    for query in cells:
        scores = np.array([pred[query] @ target[key] / temperature for key in cells])
        own = cells.index(query)
        losses.append(_logsumexp(scores) - scores[own])
        hits.append(scores.argmax() == own)
    return np.mean(losses), np.mean(hits)


def _random_params(module, seed=0):
    """Every variable of `module` (built concrete or by `nnx.eval_shape`) drawn at random, biases
    included (zero biases hide bugs); BatchNorm variances 1. Much faster on CPU than compiling
    the real initialisers op by op."""
    rng = np.random.default_rng(seed)

    def value(path, leaf):
        if sharding.path_string(path).endswith("var"):
            return jnp.ones(leaf.shape, leaf.dtype)
        return jnp.asarray(rng.normal(0, 0.5, leaf.shape), leaf.dtype)

    nnx.update(module, jax.tree_util.tree_map_with_path(value, nnx.state(module)))
    return module


@nnx.jit
def _predict(model, features):
    """`model.predict` in inference mode, compiled (op-by-op dispatch is slower on CPU)."""
    return model.predict(features, train=False)


# ---------------------------------------------------------------- Loss


@pytest.mark.parametrize("temperature, normalize", [(1.0, False), (0.3, True)])
def test_dense_nce_matches_numpy_loops(temperature, normalize):
    rng = np.random.default_rng(0)
    target = rng.normal(size=(2, 3, 2, 3, 5)).astype(np.float32)  # [batch, steps, H', W', C]
    pred = (target + rng.normal(0, 1.5, target.shape)).astype(np.float32)
    loss, accuracy = dpc.dense_nce(
        jnp.asarray(pred), jnp.asarray(target), temperature=temperature, normalize=normalize
    )
    want_loss, want_accuracy = _dense_nce_reference(pred, target, temperature, normalize)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    assert float(accuracy) == pytest.approx(want_accuracy)
    assert 0 < want_accuracy < 1  # Neither all nor none: the test can tell a wrong positive.


def test_dense_nce_is_near_zero_when_predictable_and_log_n_when_not():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(4, 3, 2, 2, 64)).astype(np.float32)
    target /= np.linalg.norm(target, axis=-1, keepdims=True)
    n = 4 * 3 * 2 * 2
    loss, accuracy = dpc.dense_nce(jnp.asarray(30 * target), jnp.asarray(target))
    assert float(loss) < 1e-3 and float(accuracy) == 1.0
    unrelated = 1e-3 * rng.normal(size=target.shape).astype(np.float32)
    loss, _ = dpc.dense_nce(jnp.asarray(unrelated), jnp.asarray(target))
    assert float(loss) == pytest.approx(np.log(n), abs=1e-2)


# ---------------------------------------------------------------- Aggregators


def test_conv_gru_cell_matches_numpy_gru():
    cell = _random_params(nnx.eval_shape(lambda: dpc.ConvGRUCell(3, 4, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 2, 3, 3)).astype(np.float32)  # [batch, H', W', input]
    h = rng.normal(size=(2, 2, 3, 4)).astype(np.float32)
    got = cell(jnp.asarray(x), jnp.asarray(h))
    np.testing.assert_allclose(np.asarray(got), _gru_reference(cell, x, h), rtol=1e-5, atol=1e-6)


class _MapEncoder(nnx.Module):
    """Stands in for a ResNet3D: DPC's model reads only `feature_map` and `feature_dim`."""

    feature_dim = 3

    def feature_map(self, video, *, train):
        return video[..., :2, :3, :]  # [n, T, 2, 3, 3]


def _dpc_model(num_seq=5, pred_step=3):
    layout = dpc.BlockLayout(num_seq=num_seq, seq_len=1, pred_step=pred_step, downsample=1)
    model = nnx.eval_shape(
        lambda: dpc.DensePredictiveCoding(_MapEncoder(), layout, gru_dropout=0.0, rngs=nnx.Rngs(0))
    )
    return _random_params(model)


def test_dpc_block_features_average_each_blocks_frames():
    """The clip is cut into `num_seq` consecutive blocks of `seq_len` frames; each block's map is
    its frames' maps averaged over time (the stand-in encoder keeps time and crops space)."""
    layout = dpc.BlockLayout(num_seq=3, seq_len=2, pred_step=1, downsample=1)
    model = nnx.eval_shape(
        lambda: dpc.DensePredictiveCoding(_MapEncoder(), layout, gru_dropout=0.0, rngs=nnx.Rngs(0))
    )
    video = np.random.default_rng(6).normal(size=(2, 6, 4, 5, 3)).astype(np.float32)
    got = model.block_features(jnp.asarray(video), train=False)
    want = [[video[b, 2 * n : 2 * n + 2, :2, :3].mean(axis=0) for n in range(3)] for b in range(2)]
    np.testing.assert_allclose(np.asarray(got), np.array(want), rtol=1e-6)
    with pytest.raises(ValueError, match="num_seq \\* seq_len"):
        model.block_features(jnp.asarray(video[:, :5]), train=False)


def test_dpc_rollout_matches_numpy():
    """Context blocks (ReLU'd) through the GRU from a zero state; phi predicts; the ReLU of each
    prediction is fed back (DPC_RNN.forward)."""
    model = _dpc_model(num_seq=5, pred_step=3)
    features = np.random.default_rng(3).normal(size=(2, 5, 2, 3, 3)).astype(np.float32)
    got = _predict(model, jnp.asarray(features))
    hidden = np.zeros_like(features[:, 0])
    for t in range(2):
        hidden = _gru_reference(model.aggregator, np.maximum(features[:, t], 0), hidden)
    want = []
    for _ in range(3):
        want.append(_phi_reference(model.predictor, hidden))
        hidden = _gru_reference(model.aggregator, np.maximum(want[-1], 0), hidden)
    np.testing.assert_allclose(np.asarray(got), np.stack(want, 1), rtol=1e-4, atol=1e-5)


def _cpc_transformer_model(num_seq=5, pred_step=2):
    layout = dpc.BlockLayout(num_seq=num_seq, seq_len=1, pred_step=pred_step, downsample=1)

    def build():
        encoder = models.get("transformer_resnet18")(
            2, width=4, transformer_width=8, num_heads=2, transformer_depth=2, rngs=nnx.Rngs(0)
        )
        return dpc.CPCTransformer(encoder, layout, rngs=nnx.Rngs(1))

    return _random_params(nnx.eval_shape(build))


@pytest.mark.parametrize("aggregator", ["dpc", "cpc_transformer"])
def test_predictions_never_read_the_blocks_they_predict(aggregator):
    model = _dpc_model() if aggregator == "dpc" else _cpc_transformer_model()
    dim = model.encoder.feature_dim
    rng = np.random.default_rng(4)
    features = rng.normal(size=(2, 5, 2, 2, dim)).astype(np.float32)
    predict = functools.partial(_predict, model)
    base = np.asarray(predict(jnp.asarray(features)))
    future = features.copy()
    future[:, model.layout.num_context :] = rng.normal(
        size=future[:, model.layout.num_context :].shape
    )
    np.testing.assert_array_equal(np.asarray(predict(jnp.asarray(future))), base)
    context = features.copy()
    # Random, not constant: LayerNorm cancels a shift shared by every channel.
    context[:, model.layout.num_context - 1] += rng.normal(size=context.shape[2:])
    assert not np.allclose(np.asarray(predict(jnp.asarray(context))), base)


@nnx.jit
def _prefix_outputs(model, context, appended):
    """Outputs for `test_cpc_transformer_prefix_attention`, in one compiled call."""
    encoder = model.encoder
    batch, blocks, positions, dim = context.shape
    x = context + encoder.position[:blocks][None, :, None, :]
    x = x.reshape(batch, blocks * positions, dim)
    for layer in encoder.layers:
        x = layer(x)
    unmasked = encoder.norm(x).reshape(context.shape)
    extended = jnp.concatenate([context, appended], axis=1)
    tokens = jnp.concatenate([context, jnp.zeros_like(appended), jnp.zeros_like(appended)], axis=1)
    first = model.predict(tokens.reshape(batch, blocks + 2, 2, 2, dim))[:, 0]
    return {
        "unmasked": unmasked,
        "context": model.aggregate(context),
        "extended": model.aggregate(extended)[:, :blocks],
        "first": first.reshape(batch, positions, dim),
        "phi_of_last": model.predictor(unmasked[:, -1]),
    }


def test_cpc_transformer_prefix_attention():
    """Context tokens attend to each other as the fine-tuned Transformer does (no mask); they
    never attend to predicted blocks; the first prediction is phi of the last context block."""
    model = _cpc_transformer_model(num_seq=5, pred_step=2)
    rng = np.random.default_rng(5)
    context = rng.normal(size=(2, 3, 4, 8)).astype(np.float32)  # [batch, blocks, positions, D]
    appended = rng.normal(size=(2, 1, 4, 8)).astype(np.float32)
    out = _prefix_outputs(model, jnp.asarray(context), jnp.asarray(appended))
    np.testing.assert_allclose(out["context"], out["unmasked"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["extended"], out["unmasked"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["first"], out["phi_of_last"], rtol=1e-5, atol=1e-5)


def test_layouts_and_encoders_are_checked():
    with pytest.raises(ValueError, match="pred_step"):
        dpc.block_layout(ml_collections.ConfigDict({"num_seq": 3, "pred_step": 3}), dpc.DPC_LAYOUT)
    frames = nnx.eval_shape(lambda: models.get("per_frame_resnet18")(2, width=4, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="dense feature map"):
        dpc.build_dpc(frames, ml_collections.ConfigDict(), nnx.Rngs(0))
    with pytest.raises(ValueError, match="transformer_resnet18"):
        dpc.build_cpc_transformer(frames, ml_collections.ConfigDict(), nnx.Rngs(0))


# ---------------------------------------------------------------- One train step


def _host_random(abstract):
    """Random values for an abstract state (compiling the real initialisers is slow on CPU)."""
    rng = np.random.default_rng(0)

    def value(path, leaf):
        name = sharding.path_string(path).rsplit("/", 1)[-1]
        if name in ("scale", "var"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if name in ("bias", "mean") or leaf.ndim < 2:
            return jnp.zeros(leaf.shape, leaf.dtype)
        return jnp.asarray(rng.normal(0, np.prod(leaf.shape[:-1]) ** -0.5, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(value, abstract)


@pytest.fixture
def quick_compile(monkeypatch):
    """Unoptimised XLA and native 3D convolutions: the step runs once, compiling dominates."""
    monkeypatch.setenv("VSSL_JAX_CONV3D", "native")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


STEP_CASES = {
    # objective: (model overrides, clip [batch, frames, size, size, 3], layout)
    "dpc": ({"model.name": "r3d_18"}, (2, 8, 32, 32, 3), (4, 2, 2)),
    "cpc_transformer": (
        {
            "model.name": "transformer_resnet18",
            "model.transformer_width": 8,
            "model.num_heads": 2,
            "model.transformer_depth": 1,
        },
        (2, 4, 64, 64, 3),
        (4, 1, 2),
    ),
}


@pytest.mark.parametrize("name", sorted(STEP_CASES))
def test_one_train_step(name, quick_compile):
    """The training loop's `train_step`, jitted: finite loss and gradients; every parameter moves
    except the unused classifier (no weight decay here, so only gradients move parameters)."""
    model_overrides, shape, (num_seq, seq_len, pred_step) = STEP_CASES[name]
    config = tiny_config(
        "",
        **model_overrides,
        **{
            "objective.name": name,
            "objective.num_seq": num_seq,
            "objective.seq_len": seq_len,
            "objective.pred_step": pred_step,
            "optimizer.weight_decay": 0.0,
        },
    )
    spec = make_state_spec(config, 2, sharding.make_mesh(config.mesh))
    step = functools.partial(
        train.train_step,
        spec=spec,
        config=config,
        objective=objectives.get(name).loss,
        schedule=optimizers.learning_rate_schedule(config.optimizer, config.num_train_steps),
    )
    params = _host_random(spec.abstract["params"])
    state = {
        "params": params,
        "model_state": _host_random(spec.abstract["model_state"]),
        "opt_state": spec.tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.PRNGKey(0),
    }
    batch = {
        "video": jnp.asarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)),
        "label": jnp.asarray([0, 1], jnp.int32),
    }
    before = jax.tree.map(np.asarray, state["params"])
    new_state, metrics = jax.jit(step)(state, batch)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0
    assert np.isfinite(float(metrics["grad_norm"])) and float(metrics["grad_norm"]) > 0
    assert 0 <= float(metrics["accuracy"]) <= 1
    after = jax.tree.map(np.asarray, new_state["params"])
    assert all(np.isfinite(a).all() for a in jax.tree.leaves(after))
    unchanged = {
        sharding.path_string(path)
        for (path, a), b in zip(
            jax.tree_util.tree_flatten_with_path(before)[0], jax.tree.leaves(after), strict=True
        )
        if np.array_equal(a, b)
    }
    assert unchanged == {"encoder/head/kernel", "encoder/head/bias"}


@pytest.mark.parametrize("method", ["dpc", "cpctrans"])
def test_finetuning_finds_every_pretrained_encoder_array_by_path(method):
    """The smoke recipes: the pretrained model's `encoder/...` arrays (backbone, and for CPCTrans
    the Transformer) are the fine-tuned model's arrays, path for path, shape for shape."""

    def shapes(config):
        spec = make_state_spec(config, 6, sharding.make_mesh(config.mesh))
        flat = jax.tree_util.tree_flatten_with_path(spec.abstract["params"])[0]
        return {sharding.path_string(path): leaf.shape for path, leaf in flat}

    pretrain = importlib.import_module(f"configs.pretrain_{method}_ucf101").get_config("smoke")
    finetune = importlib.import_module(f"configs.finetune_{method}_ucf101").get_config("smoke")
    pretrained = {
        k[len("encoder/") :]: v for k, v in shapes(pretrain).items() if k.startswith("encoder/")
    }
    finetuned = shapes(finetune)
    assert pretrained == finetuned
    heads = {k for k in shapes(pretrain) if not k.startswith("encoder/")}
    assert heads and all(k.startswith(("aggregator/", "predictor/")) for k in heads)


# ---------------------------------------------------------------- Clips


def _record(values, size=36):
    """A video whose frame i is flat grey `values[i]` (JPEG keeps flat grey within +-1)."""
    frames = [simplejpeg.encode_jpeg(np.full((size, size, 3), v, np.uint8), 95) for v in values]
    return records.VideoRecord(
        frames=frames,
        label=1,
        label_text="one",
        path="flat.mp4",
        start_time=0.0,
        end_time=1.0,
        fps=10.0,
    )


def _clip_maker(num_seq, seq_len, downsample, **objective):
    spec = pipeline.ClipSpec(num_frames=4, frame_stride=2, crop_size=32, flip=True)
    config = ml_collections.ConfigDict(
        {
            "num_seq": num_seq,
            "seq_len": seq_len,
            "pred_step": 1,
            "downsample": downsample,
            **objective,
        }
    )
    return objectives.get("dpc").train_example(spec, config)


def test_block_clip_on_tiny_dataset(tiny_dataset):
    make = _clip_maker(3, 2, 2)
    make = pickle.loads(pickle.dumps(make))  # It runs in grain workers.
    source = pipeline.split_source(tiny_dataset, "train")
    a = make(source[3], np.random.default_rng(7))
    b = make(source[3], np.random.default_rng(7))
    c = make(source[3], np.random.default_rng(8))
    assert a["video"].shape == (6, 32, 32, 3) and a["video"].dtype == np.uint8
    assert a["label"].dtype == np.int32 and int(a["label"]) == source[3].label
    np.testing.assert_array_equal(a["video"], b["video"])
    assert not np.array_equal(a["video"], c["video"])


def test_block_clip_frames_are_strided_and_short_videos_loop():
    plain = {"grayscale_prob": 0.0, "color_jitter": (0.0, 0.0, 0.0, 0.0)}
    # 10 frames, a clip spanning (6 - 1) * 3 + 1 = 16: it starts at 0 and wraps around.
    clip = _clip_maker(3, 2, 3, **plain)(
        _record([20 * i for i in range(10)]), np.random.default_rng(0)
    )
    means = clip["video"].reshape(6, -1).mean(axis=1)
    np.testing.assert_allclose(means, [20 * (i % 10) for i in (0, 3, 6, 9, 12, 15)], atol=2)
    # 40 frames: a random start, then every third frame.
    make = _clip_maker(2, 3, 3, **plain)
    for seed in range(5):
        clip = make(_record([6 * i for i in range(40)]), np.random.default_rng(seed))
        index = np.round(clip["video"].reshape(6, -1).mean(axis=1) / 6)
        np.testing.assert_array_equal(np.diff(index), 3)
        assert 0 <= index[0] <= 40 - 16


def test_color_augment_is_drawn_per_frame():
    rng = np.random.default_rng(9)
    frame = rng.integers(30, 220, (1, 16, 16, 3), dtype=np.uint8)
    video = np.repeat(frame, 6, axis=0)
    grey = dpc.color_augment(video, rng, 1.0, (0.0, 0.0, 0.0, 0.0))
    assert (grey == grey[..., :1]).all()
    for t in range(6):  # Each frame is one of the original channels.
        assert any(np.array_equal(grey[t, ..., 0], frame[0, ..., c]) for c in range(3))
    brighter = dpc.color_augment(video, rng, 0.0, (0.5, 0.0, 0.0, 0.0))
    for t in range(6):  # Each frame is the input times one factor in [0.5, 1.5], clipped.
        inside = brighter[t] < 255
        factor = brighter[t][inside].sum() / video[t][inside].sum()
        assert 0.49 <= factor <= 1.51
        scaled = np.clip(np.round(video[t].astype(np.float64) * factor), 0, 255)
        assert np.abs(scaled - brighter[t]).max() <= 2
    assert len({brighter[t].tobytes() for t in range(6)}) == 6  # A factor per frame.
    jittered = dpc.color_augment(video, rng, 0.5, (0.5, 0.5, 0.5, 0.25))
    assert len({jittered[t].tobytes() for t in range(6)}) == 6
