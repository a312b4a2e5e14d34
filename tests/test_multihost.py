"""Multi-host training: two processes on localhost (2 CPU devices each, gloo collectives).

The two-process run is compared with one process on 4 devices that is fed the same global
batches. Those are not the batches a plain one-process run reads: each host reads its own slice
of the examples (`pipeline.train_dataset` keeps every `process_count`-th record from
`process_index`) and shuffles that slice, and global batch i is host 0's local batch i followed
by host 1's. So the reference process builds host 0's and host 1's pipelines with the same code
(`jax.process_index`/`process_count` stubbed to 0/2 and 1/2 while they are built), zips them and
concatenates each pair of local batches: the same examples, crops and order as the two-process
run. Equal losses then show the distributed parts (initialisation, per-host batches becoming one
global array, cross-process gradient reduction, checkpointing) compute the same training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest

from vssl_jax import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3

_PROCESS = """
import json, sys
sys.path.insert(0, {repo!r})
from absl import flags
flags.FLAGS.mark_as_parsed()
import jax
jax.config.update("jax_num_cpu_devices", 2)
from vssl_jax import distributed
how = distributed.initialize({address!r}, {num_processes}, {process_id})
assert how == {how!r}, how
assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
"""

_TRAIN = """
from tests.conftest import tiny_config
from vssl_jax import train
config = tiny_config({data!r}, num_train_steps={steps}, checkpoint_every={steps})
train.train_and_evaluate(config, {workdir!r})
"""

_ALLGATHER = """
from jax.experimental import multihost_utils
import numpy as np
gathered = multihost_utils.process_allgather(np.int32(jax.process_index()))
assert gathered.tolist() == [0, 1], gathered
"""

_REFERENCE = """
import json, sys
from unittest import mock
sys.path.insert(0, {repo!r})
from absl import flags
flags.FLAGS.mark_as_parsed()
import jax
jax.config.update("jax_num_cpu_devices", 4)
import grain
import numpy as np
from tests.conftest import tiny_config
from vssl_jax import evaluate, main, train
from vssl_jax.data import pipeline

one_host = pipeline.train_dataset


def two_hosts(*args, **kwargs):
    local = []
    for host in (0, 1):
        with (
            mock.patch.object(jax, "process_index", lambda: host),
            mock.patch.object(jax, "process_count", lambda: 2),
        ):
            local.append(one_host(*args, **kwargs))
    pairs = grain.experimental.ZipIterDataset(parents=local)
    return pairs.map(lambda pair: {{k: np.concatenate([b[k] for b in pair]) for k in pair[0]}})


config = tiny_config({data!r}, num_train_steps={steps}, checkpoint_every={steps})
with mock.patch.object(pipeline, "train_dataset", two_hosts):
    train.train_and_evaluate(config, {reference!r})

# The two-process run's checkpoint, restored in this one process: the same weights as this
# run's, and the eval stage gives the metrics the two-process run reported.
import os, time
while not os.path.exists({two_done!r}):  # Written when both processes have exited.
    time.sleep(0.1)
with open({two!r} + "/eval_results.json") as f:
    reported = json.load(f)
restored, _, _, _, _ = evaluate.restore_latest(config, {two!r})
own, _, _, _, _ = evaluate.restore_latest(config, {reference!r})
differences = jax.tree.leaves(
    jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), restored["params"], own["params"])
)
sizes = jax.tree.leaves(jax.tree.map(lambda a: float(np.max(np.abs(np.asarray(a)))), own["params"]))
evaluated = main.run(tiny_config({data!r}, stage="eval"), {two!r})
with open({report!r}, "w") as f:
    json.dump({{
        "reported": reported,
        "evaluated": evaluated,
        "step": int(restored["step"]),
        "max_difference": max(differences),
        "max_size": max(sizes),
    }}, f)
"""


class _Process:
    """`code` in a new Python, stderr to the file `log`: a pipe that nobody reads while another
    process is awaited could fill up and stall that process in the middle of a collective."""

    def __init__(self, code: str, log: str, env: dict | None = None):
        self.log = log
        with open(log, "w") as stderr:
            self.popen = subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=REPO,
                env={**os.environ, **(env or {})},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )


def _wait(processes: dict[str, _Process], timeout: float = 240) -> None:
    """Waits for all; kills all when one fails or runs out of time, naming it with its stderr."""
    deadline = time.monotonic() + timeout
    try:
        for name, process in processes.items():
            returncode = process.popen.wait(timeout=max(1.0, deadline - time.monotonic()))
            if returncode != 0:
                with open(process.log) as f:
                    raise AssertionError(f"{name} exited with {returncode}: {f.read()[-4000:]}")
    finally:
        for process in processes.values():
            if process.popen.poll() is None:
                process.popen.kill()
                process.popen.wait()


def _losses(workdir: str) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def test_two_processes_train_like_one_process_with_the_same_global_batches(tiny_dataset, tmp_path):
    two, reference = str(tmp_path / "two"), str(tmp_path / "reference")
    report, two_done = str(tmp_path / "report.json"), str(tmp_path / "two_done")
    # The reference trains meanwhile (the cores are shared), then waits for `two_done`.
    code = _REFERENCE.format(
        repo=REPO,
        data=tiny_dataset,
        steps=STEPS,
        reference=reference,
        two=two,
        two_done=two_done,
        report=report,
    )
    reference_process = _Process(code, str(tmp_path / "reference.log"))
    address = f"127.0.0.1:{portpicker.pick_unused_port()}"
    train_code = _TRAIN.format(data=tiny_dataset, steps=STEPS, workdir=two)
    pair = {
        f"process {i}": _Process(
            _PROCESS.format(
                repo=REPO, address=address, num_processes=2, process_id=i, how="explicit"
            )
            + train_code,
            str(tmp_path / f"process_{i}.log"),
        )
        for i in (0, 1)
    }
    try:
        _wait(pair)
    finally:
        open(two_done, "w").close()  # Also on failure: the reference stops waiting.
    assert sorted(os.listdir(os.path.join(two, "checkpoints"))) == [str(STEPS)]
    _wait({"reference": reference_process})

    two_losses, one_losses = _losses(two), _losses(reference)
    assert sorted(two_losses) == sorted(one_losses) == list(range(1, STEPS + 1))
    np.testing.assert_allclose(
        [two_losses[s] for s in one_losses], list(one_losses.values()), rtol=1e-5
    )
    assert len({round(v, 4) for v in one_losses.values()}) == STEPS  # The losses move.

    with open(report) as f:
        report = json.load(f)
    assert report["step"] == STEPS
    assert report["max_difference"] <= 1e-5 * report["max_size"], report
    assert report["evaluated"] == report["reported"]
    assert report["evaluated"]["num_examples"] == 10  # Every val video once, across both hosts.


def test_two_processes_join_through_slurm_variables(tmp_path):
    """What `srun --ntasks=2` sets: JAX finds the coordinator (first node), count and index."""
    port = str(portpicker.pick_unused_port())
    processes = {}
    for i in (0, 1):
        env = {
            "SLURM_JOB_ID": "4242",
            "SLURM_STEP_NODELIST": "localhost",
            "SLURM_NTASKS": "2",
            "SLURM_PROCID": str(i),
            "SLURM_LOCALID": str(i),
            "JAX_COORDINATOR_PORT": port,  # Else derived from the job id; this one is free.
        }
        code = _PROCESS.format(repo=REPO, address="", num_processes=0, process_id=-1, how="slurm")
        processes[f"task {i}"] = _Process(code + _ALLGATHER, str(tmp_path / f"task_{i}.log"), env)
    _wait(processes)


def test_cluster_arguments_from_flags_and_environment(tmp_path, monkeypatch):
    explicit = distributed.cluster_arguments("10.0.0.1:1234", 4, 3, environ={}, tpu_vm=False)
    assert explicit == (
        "explicit",
        {
            "coordinator_address": "10.0.0.1:1234",
            "num_processes": 4,
            "process_id": 3,
            "cluster_detection_method": "deactivate",
        },
    )
    from_env = distributed.cluster_arguments(
        environ={"JAX_COORDINATOR_ADDRESS": "h:1"}, num_processes=2, process_id=0, tpu_vm=False
    )
    assert from_env[1]["coordinator_address"] == "h:1"
    with pytest.raises(ValueError, match="also give --num_processes and --process_id"):
        distributed.cluster_arguments("10.0.0.1:1234", environ={}, tpu_vm=False)
    with pytest.raises(ValueError, match="need --coordinator_address"):
        distributed.cluster_arguments(num_processes=2, process_id=1, environ={}, tpu_vm=False)

    slurm = {v: "0" for v in distributed.SLURM_VARIABLES} | {"SLURM_NTASKS": "8"}
    # A coordinator of the user's choosing inside srun: count and index still from SLURM.
    assert distributed.cluster_arguments("h:2", environ=slurm, tpu_vm=False) == (
        "explicit",
        {"coordinator_address": "h:2"},
    )
    assert distributed.cluster_arguments(environ=slurm, tpu_vm=False) == (
        "slurm",
        {"cluster_detection_method": "slurm"},
    )
    # One SLURM task (a plain sbatch script) is a single-process run.
    one_task = slurm | {"SLURM_NTASKS": "1"}
    assert distributed.cluster_arguments(environ=one_task, tpu_vm=False) == ("single", None)
    assert distributed.cluster_arguments(environ={}, tpu_vm=True) == ("cloud_tpu", {})
    assert distributed.cluster_arguments(environ={}, tpu_vm=False) == ("single", None)

    # TPU detection: a Google PCI device, and libtpu installed.
    for name, vendor in (("0000:00:04.0", "0x1ae0"), ("0000:00:05.0", "0x8086")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "vendor").write_text(vendor + "\n")
    real_find_spec = distributed.importlib.util.find_spec
    monkeypatch.setattr(
        distributed.importlib.util,
        "find_spec",
        lambda name: object() if name == "libtpu" else real_find_spec(name),
    )
    assert distributed.on_cloud_tpu_vm(str(tmp_path))
    os.remove(tmp_path / "0000:00:04.0" / "vendor")
    assert not distributed.on_cloud_tpu_vm(str(tmp_path))
