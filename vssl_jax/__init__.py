"""vssl_jax: self-supervised video representation learning and video classification in JAX."""

import os
from importlib import metadata

__version__ = "0.1.0"

# jaxlib 0.10's XLA:CPU hands every 2D convolution to YNNPACK, whose kernel gradients run ~9x
# slower than Eigen's on this project's AVX2 CPUs (R3D-18's CPU train step: 4.95 s with it,
# 1.51 s without; benchmarks/README.md). Every 3D convolution here is 2D convolutions on CPU
# (`models.layers.conv3d_temporal_taps`). An XLA flag unknown to a jaxlib aborts the process, so
# only the jaxlib releases checked to know it get it. Set before JAX starts its backends.
CPU_CONVOLUTION_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_JAXLIB_RELEASES_WITH_FLAG = ("0.10.",)


def use_eigen_cpu_convolutions(environ=os.environ) -> bool:
    """Adds `CPU_CONVOLUTION_FLAG` to `XLA_FLAGS` unless the user set that option already or
    the installed jaxlib is not one known to accept it. Returns whether the flag is in force."""
    flags = environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return CPU_CONVOLUTION_FLAG in flags.split()
    try:
        jaxlib_version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return False
    if not jaxlib_version.startswith(_JAXLIB_RELEASES_WITH_FLAG):
        return False
    environ["XLA_FLAGS"] = f"{flags} {CPU_CONVOLUTION_FLAG}".strip()
    return True


use_eigen_cpu_convolutions()
