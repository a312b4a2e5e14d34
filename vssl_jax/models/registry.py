"""Model registry: a model family registers its constructors by name; configs pick by name."""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx

_MODELS: dict[str, Callable[..., nnx.Module]] = {}


def register(name: str):
    """Decorator: `@register("r3d_18")` on a function `(num_classes, *, rngs, **kwargs) -> Module`."""

    def decorate(constructor):
        if name in _MODELS:
            raise ValueError(f"model '{name}' is registered twice")
        _MODELS[name] = constructor
        return constructor

    return decorate


def names() -> list[str]:
    return sorted(_MODELS)


def get(name: str) -> Callable[..., nnx.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model '{name}'; registered models: {', '.join(names())}"
        ) from None
