"""Training objectives, found by name. An objective is a pure function

    objective(model, batch, *, train, rngs, config) -> (loss, metrics)

of the model and a batch dict (`video` normalised float [batch, time, height, width, 3],
`label` int32 [batch], optional `mask` float [batch]); `metrics` are scalar arrays to log.
"""

from __future__ import annotations

from collections.abc import Callable

from vssl_jax.objectives import supervised

_OBJECTIVES: dict[str, Callable] = {
    "supervised": supervised.classification_loss,
}


def get(name: str) -> Callable:
    try:
        return _OBJECTIVES[name]
    except KeyError:
        raise ValueError(
            f"unknown objective '{name}'; registered objectives: {', '.join(sorted(_OBJECTIVES))}"
        ) from None
