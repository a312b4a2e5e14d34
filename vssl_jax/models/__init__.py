"""Video models (Flax NNX, channels-last `[batch, time, height, width, channels]`).

Every model takes `(video, *, train, rngs=None)` and returns float32 logits `[batch, num_classes]`,
and `features(video, *, train)` returns the pooled representation `[batch, feature_dim]`.
`python -m vssl_jax.models --list` prints the registered names; `--summary NAME` their size.
"""

# Importing a family registers its models.
from vssl_jax.models import (  # noqa: F401
    c3d,
    cnn_lstm,
    frame_transformer,
    inception3d,
    resnet3d,
    tsn,
    video_vit,
    vit,
    vivit,
)
from vssl_jax.models.registry import get, names, register

__all__ = ["get", "names", "register", "create"]


def create(model_config, num_classes: int, *, seed: int):
    """Builds the model that `config.model` names, initialised from `seed`."""
    from flax import nnx

    kwargs = {k: v for k, v in model_config.items() if k != "name"}
    return get(model_config.name)(num_classes, rngs=nnx.Rngs(params=seed), **kwargs)
