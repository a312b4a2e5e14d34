"""One R3D-18 training step (forward, backward, SGD update): vssl_jax vs torchvision.

The JAX side is `vssl_jax.train.train_step`, jitted exactly as `train.py` jits it (state donated,
batch sharded over the mesh), on a synthetic uint8 batch `[batch, frames, size, size, 3]` that it
normalises on the device as training does. FLOPs per step come from XLA's
`compiled.cost_analysis()`; MFU is achieved FLOP/s over `--peak-tflops` (guessed for H100/H200
in bfloat16, otherwise n/a unless given). Peak memory is the device's `peak_bytes_in_use` where
the backend reports it, else the process's peak RSS (CPU).

The PyTorch side, when torch and torchvision are importable, is `torchvision.models.video.r3d_18`
doing the same step on the same batch: uint8 -> normalise -> cross-entropy -> backward -> SGD
with momentum and weight decay on the kernels (as the optax optimizer), float32 on CPU and
bfloat16 autocast with `channels_last_3d` on CUDA. Its FLOPs come from
`torch.utils.flop_counter` (convolutions and matmuls only), an independent check of XLA's count.

Each framework runs in its own process, so neither's threads, allocator or RSS affect the other.
Times are over `--steps` steps after `--warmup` untimed ones: the median step (which clips/s,
TFLOP/s and MFU use), the best step, and the host CPU time of a step (all threads), which other
processes on a shared machine barely move. "compile s" is JAX's lower + compile, and PyTorch's
first step (autotuning, plus compiling with `--torch-compile`).

    python -m benchmarks.train_step                       # CPU: batch 4, 8x56x56, width 64
    python -m benchmarks.train_step --batch 32 --frames 16 --size 112 --steps 20   # a GPU
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import report

# Dense bfloat16 tensor-core peaks (TFLOP/s), by a substring of `device_kind`.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}
# Kinetics-400, as torchvision's r3d_18 is published.
NUM_CLASSES = 400
# The Kinetics statistics of configs/base.py, for the PyTorch side (which does not import it).
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)


def _peak_tflops(args, device_kind: str, dtype: str) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if dtype != "bfloat16":
        return None
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_kind), None)


def _summary(
    args, *, framework, device, dtype, step_times, cpu_times, flops, memory, compile_seconds
):
    step = statistics.median(step_times)
    tflops = flops / step / 1e12 if flops else None
    peak = _peak_tflops(args, device, dtype)
    return {
        "framework": framework,
        "device": device,
        "dtype": dtype,
        "batch": args.batch,
        "clip": [args.frames, args.size, args.size],
        "width": args.width,
        "step_seconds": step,
        # Other processes only ever add time: on a shared machine the best step is the cleaner
        # estimate of what the step costs.
        "best_step_seconds": min(step_times),
        "step_times": step_times,
        # Host CPU time of all the process's threads: barely moved by other processes' load.
        "cpu_seconds_per_step": statistics.median(cpu_times),
        "clips_per_second": args.batch / step,
        "flops_per_step": flops,
        "tflops_per_second": tflops,
        "peak_tflops": peak,
        "mfu": tflops / peak if tflops and peak else None,
        "peak_memory_bytes": memory[0],
        "memory_kind": memory[1],
        "compile_seconds": compile_seconds,
    }


def _synthetic_batch(args, seed: int = 0):
    """uint8 video `[batch, frames, size, size, 3]` and int32 labels, as the input pipeline gives."""
    import numpy as np

    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (args.batch, args.frames, args.size, args.size, 3), np.uint8)
    return video, rng.integers(0, NUM_CLASSES, args.batch).astype(np.int32)


def run_jax(args) -> dict:

    import jax

    try:
        from configs.base import get_base_config
        from vssl_jax import objectives, sharding
        from vssl_jax.state import initial_state, make_state_spec
        from vssl_jax.train import jit_train_step
    except ModuleNotFoundError as e:
        raise SystemExit(
            f"error: no module named '{e.name}': run from the repository root, and on a machine "
            "without vssl_jax's dependencies install the wheels benchmarks/README.md lists"
        ) from None

    dtype = args.dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
    config = get_base_config()
    config.model.width = args.width
    config.model.dtype = dtype
    config.model.dropout = 0.0  # torchvision's r3d_18 has none.
    config.data.num_frames = args.frames
    config.data.crop_size = args.size
    config.batch_size = args.batch

    mesh = sharding.make_mesh(config.mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    spec = make_state_spec(config, NUM_CLASSES, mesh)
    step_fn = jit_train_step(spec, config, mesh, objectives.get(config.objective.name))
    state = initial_state(spec)
    video, label = _synthetic_batch(args)
    batch = jax.device_put({"video": video, "label": label}, batch_sharding)

    start = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost

    step_times, cpu_times = [], []
    for i in range(args.warmup + args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        if i >= args.warmup:
            step_times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)

    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        memory = (stats["peak_bytes_in_use"], "device peak")
    else:
        memory = (report.peak_rss_bytes(), "process peak RSS")
    return _summary(
        args,
        framework=f"jax {jax.__version__}",
        device=device.device_kind,
        dtype=dtype,
        step_times=step_times,
        cpu_times=cpu_times,
        flops=(cost or {}).get("flops"),
        memory=memory,
        compile_seconds=compile_seconds,
    )


def run_torch(args) -> dict:
    import torch
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_cuda = device.type == "cuda"
    dtype = args.dtype or ("bfloat16" if on_cuda else "float32")
    # channels_last_3d is what cuDNN's fast bf16 kernels want; on CPU the default layout is kept.
    layout = torch.channels_last_3d if on_cuda else torch.contiguous_format
    torch.manual_seed(0)
    model = torchvision.models.video.r3d_18(num_classes=NUM_CLASSES)
    model = model.to(device, memory_format=layout).train()
    decayed = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decayed, "weight_decay": 1e-3}, {"params": others, "weight_decay": 0.0}],
        lr=0.1,
        momentum=0.9,
    )
    video, label = _synthetic_batch(args)
    video = torch.from_numpy(video).to(device)  # [batch, time, height, width, 3] uint8
    label = torch.from_numpy(label).long().to(device)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1, 1)
    forward = torch.compile(model) if args.torch_compile else model

    def step(net):
        # [B, T, H, W, C] -> [B, C, T, H, W] is a view; normalising on the device, as JAX does.
        x = video.permute(0, 4, 1, 2, 3).float().div(255).sub(mean).div(std)
        x = x.contiguous(memory_format=layout)
        with torch.autocast(device.type, torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = torch.nn.functional.cross_entropy(net(x), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def sync():
        if on_cuda:
            torch.cuda.synchronize()

    # Counted on the eager model, before any timing: the counter slows the step it watches.
    counter = FlopCounterMode(display=False)
    with counter:
        step(model)
    sync()

    start = time.perf_counter()
    step(forward)  # Compiles when --torch-compile; otherwise the cuDNN / oneDNN autotuning warm-up.
    sync()
    compile_seconds = time.perf_counter() - start
    step_times, cpu_times = [], []
    for i in range(args.warmup + args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        step(forward)
        sync()
        if i >= args.warmup:
            step_times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)

    if on_cuda:
        memory = (torch.cuda.max_memory_allocated(), "device peak")
        device_kind = torch.cuda.get_device_name(device)
    else:
        memory = (report.peak_rss_bytes(), "process peak RSS")
        device_kind = "cpu"
    compiled = "+compile" if args.torch_compile else ""
    return _summary(
        args,
        framework=f"torch {torch.__version__}{compiled}",
        device=device_kind,
        dtype=dtype,
        step_times=step_times,
        cpu_times=cpu_times,
        flops=float(counter.get_total_flops()),
        memory=memory,
        compile_seconds=compile_seconds,
    )


def _run_child(args, framework: str, extra: list[str]) -> dict:
    """This script with `--framework framework` in a fresh process; returns its result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        command = [sys.executable, "-m", "benchmarks.train_step", "--framework", framework]
        for flag in ("batch", "frames", "size", "width", "steps", "warmup", "peak_tflops"):
            value = getattr(args, flag)
            if value is not None:
                command += [f"--{flag.replace('_', '-')}", str(value)]
        if args.torch_compile:
            command.append("--torch-compile")
        subprocess.run(command + extra + ["--json", out], check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return json.load(f)["results"][0]


def _print_results(results: list[dict]) -> None:
    first = results[0]
    clip = "x".join(str(n) for n in first["clip"])
    rows = [
        [
            r["framework"],
            r["device"],
            r["dtype"],
            r["step_seconds"],
            r["best_step_seconds"],
            r["cpu_seconds_per_step"],
            r["clips_per_second"],
            r["flops_per_step"] / 1e9 if r["flops_per_step"] else None,
            r["tflops_per_second"],
            f"{100 * r['mfu']:.1f}%" if r["mfu"] else None,
            r["peak_memory_bytes"] / 2**30,
            r["memory_kind"],
            r["compile_seconds"],
        ]
        for r in results
    ]
    report.print_table(
        f"R3D-18 train step, batch {first['batch']}, clip {clip}, width {first['width']}",
        [
            "framework",
            "device",
            "dtype",
            "step s",
            "best s",
            "host CPU s",
            "clips/s",
            "GFLOP/step",
            "TFLOP/s",
            "MFU",
            "peak GiB",
            "memory",
            "compile s",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=56, help="clip height and width")
    parser.add_argument("--width", type=int, default=64, help="R3D-18 width (64 as published)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        help="compute dtype (default: float32 on CPU, bfloat16 on accelerators)",
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--peak-tflops", type=float, help="device peak for MFU (TFLOP/s)")
    parser.add_argument(
        "--framework",
        choices=("both", "jax", "torch"),
        default="both",
        help="both: JAX, then PyTorch if installed, each in its own process",
    )
    parser.add_argument("--torch-compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args()
    report.warn_if_busy()
    if args.width != 64 and args.framework != "jax":
        # torchvision's r3d_18 is fixed at the published width.
        parser.error("--width other than 64 needs --framework jax")

    if args.framework == "jax":
        results = [run_jax(args)]
    elif args.framework == "torch":
        results = [run_torch(args)]
    else:
        results = [_run_child(args, "jax", ["--dtype", args.dtype] if args.dtype else [])]
        if importlib.util.find_spec("torch") and importlib.util.find_spec("torchvision"):
            # The same dtype as JAX chose, on the matching kind of device.
            device = "cpu" if results[0]["device"] == "cpu" else "cuda"
            extra = ["--dtype", results[0]["dtype"], "--device", device]
            results.append(_run_child(args, "torch", extra))
        else:
            print("torch/torchvision are not installed: the PyTorch comparison is skipped")
    _print_results(results)
    report.write_json(
        args.json, {"benchmark": "train_step", "args": vars(args), "results": results}
    )


if __name__ == "__main__":
    main()
