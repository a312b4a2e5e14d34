"""vssl_jax: self-supervised video representation learning and video classification in JAX."""

__version__ = "0.1.0"
