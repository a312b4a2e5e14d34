"""Benchmarks of vssl_jax; run each from the repository root as `python -m benchmarks.NAME`."""
