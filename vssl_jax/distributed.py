"""Joining a multi-process run: Cloud TPU pod slices, SLURM jobs, or explicit addresses.

Every process of a multi-host run calls `initialize()` before JAX touches a device; JAX's own
`jax.distributed.initialize` does the work. Which processes belong together comes from the
first of these that applies:

1. explicit settings: `coordinator_address` (host:port of process 0; or the environment's
   JAX_COORDINATOR_ADDRESS), `num_processes` and `process_id` (flags of `vssl_jax.main`; inside
   an `srun` step the address alone will do, SLURM gives the rest);
2. a SLURM job step (`srun`) of several tasks: JAX reads SLURM_JOB_ID, SLURM_STEP_NODELIST,
   SLURM_NTASKS, SLURM_PROCID and SLURM_LOCALID (one process per GPU: JAX shows each
   process the GPU of its SLURM_LOCALID);
3. a Cloud TPU VM: JAX reads the slice's workers from the TPU VM's metadata.

With none of these it is a single-process run, and nothing happens. Afterwards `jax.devices()`
lists every process's devices; the input pipeline reads this process's share of the data
(`jax.process_index()`) and `pipeline.global_batch` assembles the global batch.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from collections.abc import Mapping

import jax
from absl import logging

# JAX's SLURM detection (jax._src.clusters.SlurmCluster) needs all of these.
SLURM_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
)
# Google's PCI vendor id: what JAX checks (jax._src.hardware_utils) to tell a Cloud TPU VM.
GOOGLE_PCI_VENDOR = "0x1ae0"


def on_cloud_tpu_vm(pci_devices: str = "/sys/bus/pci/devices") -> bool:
    """True on a machine with TPU chips attached (a Cloud TPU VM, from its PCI devices) and
    JAX's TPU support (`libtpu`, from `jax[tpu]`) installed: what JAX's TPU detection needs."""
    if importlib.util.find_spec("libtpu") is None:
        return False
    for vendor in glob.glob(os.path.join(pci_devices, "*", "vendor")):
        with open(vendor) as f:
            if f.read().strip() == GOOGLE_PCI_VENDOR:
                return True
    return False


def cluster_arguments(
    coordinator_address: str = "",
    num_processes: int = 0,
    process_id: int = -1,
    *,
    environ: Mapping[str, str] = os.environ,
    tpu_vm: bool | None = None,
) -> tuple[str, dict | None]:
    """(how, keyword arguments for `jax.distributed.initialize`), or (how, None) for one process.

    `how` is "explicit", "slurm", "cloud_tpu" or "single"; 0 and -1 mean "not given".
    `tpu_vm` None looks at this machine's PCI devices.
    """
    address = coordinator_address or environ.get("JAX_COORDINATOR_ADDRESS", "")
    in_slurm_step = all(v in environ for v in SLURM_VARIABLES) and int(environ["SLURM_NTASKS"]) > 1
    if address:
        if not in_slurm_step and (num_processes < 1 or process_id < 0):
            raise ValueError(
                f"coordinator address {address}: also give --num_processes and --process_id "
                "(this process's index, 0 to num_processes - 1)"
            )
        if num_processes >= 1 and process_id >= 0:
            # All given: JAX's cluster detection stays off, so inside a SLURM allocation it
            # does not narrow each process to the one GPU of SLURM_LOCALID (one process per
            # node, all its GPUs).
            return "explicit", {
                "coordinator_address": address,
                "num_processes": num_processes,
                "process_id": process_id,
                "cluster_detection_method": "deactivate",
            }
        # Inside an `srun` step: JAX takes the count and index from SLURM.
        return "explicit", {"coordinator_address": address}
    if num_processes > 1 or process_id > 0:
        raise ValueError(
            f"--num_processes={num_processes} --process_id={process_id} need "
            "--coordinator_address (host:port of process 0)"
        )
    if in_slurm_step:
        return "slurm", {"cluster_detection_method": "slurm"}
    if on_cloud_tpu_vm() if tpu_vm is None else tpu_vm:
        return "cloud_tpu", {}
    return "single", None


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> str:
    """Joins this process to its multi-process run, if it is part of one; returns how
    ("explicit", "slurm", "cloud_tpu", "single", or "already" when JAX already was).

    Call before any JAX computation (or `jax.devices()`): JAX refuses afterwards.
    """
    if jax.distributed.is_initialized():
        return "already"
    how, arguments = cluster_arguments(coordinator_address, num_processes, process_id)
    if arguments is None:
        return how
    jax.distributed.initialize(**arguments)
    logging.info(
        "Process %d of %d (%s): %d local devices of %d",
        jax.process_index(),
        jax.process_count(),
        how,
        jax.local_device_count(),
        jax.device_count(),
    )
    return how
