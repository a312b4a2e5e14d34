"""One training step (forward, backward, SGD update) of a zoo model: vssl_jax vs PyTorch.

`--model` picks the network: `r3d_18` (default), `r2plus1d_18`, `i3d`, `transformer_resnet18`
(2D ResNet-18 + Transformer), `vivit_joint` (ViT-B/16 over all 2x16x16 tubelets of the clip,
VideoMAE's backbone) or `vivit_factorised` (ViViT-B/16x2 factorised encoder: 12 spatial + 4
temporal layers). `--remat on|off|both` recomputes each Transformer block's activations in the
backward pass (the models' `remat` switch); `both` runs the step twice to show the memory it
saves and the time it costs.

The JAX side is `vssl_jax.train.train_step`, jitted exactly as `train.py` jits it (state donated,
batch sharded over the mesh), on a synthetic uint8 batch `[batch, frames, size, size, 3]` that it
normalises on the device as training does. FLOPs per step come from XLA's
`compiled.cost_analysis()` of the step without remat (the model's FLOPs, not the recompute);
MFU is achieved FLOP/s over `--peak-tflops` (guessed for H100/H200 in bfloat16, otherwise n/a
unless given). Peak memory is the device's `peak_bytes_in_use` where
the backend reports it, else the process's peak RSS (CPU); "XLA temp" is the compiled step's
scratch memory (activations kept for the backward pass, workspaces) from
`compiled.memory_analysis()`, the figure remat shrinks, on any backend.

The PyTorch side, when torch and torchvision are importable, does the same step on the same batch:
uint8 -> normalise -> cross-entropy -> backward -> SGD with momentum and weight decay on the
kernels (as the optax optimizer), float32 on CPU and bfloat16 autocast (`channels_last_3d` for
the 3D CNNs) on CUDA. Its networks: torchvision's `r3d_18` / `r2plus1d_18`; for
`transformer_resnet18` torchvision's `resnet18` on every frame, a linear map to 512, learned
positions, 4 `nn.TransformerEncoderLayer` (pre-norm, GELU, 8 heads), LayerNorm, time mean; for
the ViViTs a `Conv3d` with a 2x16x16 kernel and stride, learned positions (and class tokens for
the factorised encoder), `nn.TransformerEncoderLayer` blocks of width 768, 12 heads, MLP 3072
(pre-norm, GELU, eps 1e-6, as `vssl_jax.models.transformer.Block`), LayerNorm, then the token
mean (joint) or the class token (factorised), and a linear head; `--remat on` wraps each block in
`torch.utils.checkpoint`. torchvision has no I3D: `i3d` runs JAX only. FLOPs come from
`torch.utils.flop_counter` (convolutions, matmuls and attention), an independent check of XLA's
count.

Each framework runs in its own process, so neither's threads, allocator or RSS affect the other.
Times are over `--steps` steps after `--warmup` untimed ones: the median step (which clips/s,
TFLOP/s and MFU use), the best step, and the host CPU time of a step (all threads), which other
processes on a shared machine barely move. "compile s" is JAX's lower + compile, and PyTorch's
first step (autotuning, plus compiling with `--torch-compile`).

    python -m benchmarks.train_step                       # CPU: R3D-18, batch 4, 8x56x56
    python -m benchmarks.train_step --batch 32 --frames 16 --size 112 --steps 20   # a GPU
    python -m benchmarks.train_step --model vivit_joint --batch 8 --remat both     # 16x224x224
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
# The 3D CNNs, whose `--width` is their first stage's; torchvision's are fixed at 64.
CNNS = ("r3d_18", "r2plus1d_18", "i3d", "transformer_resnet18")
TORCHVISION_VIDEO = ("r3d_18", "r2plus1d_18")
# ViT-B/16 with 2x16x16 tubelets; the factorised encoder adds 4 temporal layers (ViViT-B FE).
VIVIT = {
    "vivit_joint": {"width": 768, "depth": 12, "num_heads": 12, "patch": 16, "tubelet_frames": 2},
    "vivit_factorised": {
        "width": 768,
        "depth": 12,
        "temporal_depth": 4,
        "num_heads": 12,
        "patch": 16,
        "tubelet_frames": 2,
    },
}
MODELS = (*CNNS, *VIVIT)
# (frames, size) when not given: the CPU-sized clip for the CNNs, the ViViTs' 16x224x224.
DEFAULT_CLIP = {**dict.fromkeys(CNNS, (8, 56)), **dict.fromkeys(VIVIT, (16, 224))}
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
    args,
    *,
    framework,
    device,
    dtype,
    step_times,
    cpu_times,
    flops,
    memory,
    compile_seconds,
    temp_bytes=None,
):
    step = statistics.median(step_times)
    tflops = flops / step / 1e12 if flops else None
    peak = _peak_tflops(args, device, dtype)
    return {
        "framework": framework,
        "model": args.model,
        "remat": args.remat == "on",
        "device": device,
        "dtype": dtype,
        "batch": args.batch,
        "clip": [args.frames, args.size, args.size],
        "width": args.width if args.model in CNNS else VIVIT[args.model]["width"],
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
        # XLA's scratch memory of the compiled step (JAX only).
        "temp_bytes": temp_bytes,
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
        from vssl_jax.train import compiled_flops, jit_train_step
    except ModuleNotFoundError as e:
        raise SystemExit(
            f"error: no module named '{e.name}': run from the repository root, and on a machine "
            "without vssl_jax's dependencies install the wheels benchmarks/README.md lists"
        ) from None

    dtype = args.dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
    config = get_base_config()
    config.model.name = args.model
    config.model.dtype = dtype
    config.model.dropout = 0.0  # torchvision's video ResNets have none.
    if args.model in VIVIT:
        for key, value in VIVIT[args.model].items():
            config.model[key] = value
        # The position tables' reference grid is the benchmarked clip: no resizing in the step.
        config.model.image_size = args.size
        config.model.num_frames = args.frames
        config.model.remat = args.remat == "on"
    else:
        config.model.width = args.width
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
    temp_bytes = compiled.memory_analysis().temp_size_in_bytes

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
    if config.model.get("remat"):
        # XLA's cost analysis counts a loop body once, and remat runs the blocks as one scan:
        # the same step without remat (compiled after the memory is read) gives the model's
        # FLOPs, which MFU counts, leaving out the recompute.
        config.model.remat = False
        unrolled = make_state_spec(config, NUM_CLASSES, mesh)
        flops_step = jit_train_step(unrolled, config, mesh, objectives.get(config.objective.name))
        flops = compiled_flops(flops_step.lower(unrolled.abstract, batch).compile())
    else:
        flops = compiled_flops(compiled)
    return _summary(
        args,
        framework=f"jax {jax.__version__}",
        device=device.device_kind,
        dtype=dtype,
        step_times=step_times,
        cpu_times=cpu_times,
        flops=flops,
        memory=memory,
        compile_seconds=compile_seconds,
        temp_bytes=temp_bytes,
    )


def _torch_model(args):
    """The PyTorch network `args.model` names (module docstring), taking `[B, 3, T, H, W]`."""
    import torch
    import torchvision
    from torch import nn
    from torch.utils.checkpoint import checkpoint

    if args.model in TORCHVISION_VIDEO:
        return getattr(torchvision.models.video, args.model)(num_classes=NUM_CLASSES)

    def block(width: int, heads: int) -> nn.Module:
        return nn.TransformerEncoderLayer(
            width,
            heads,
            4 * width,
            dropout=0.0,
            activation="gelu",
            layer_norm_eps=1e-6,
            batch_first=True,
            norm_first=True,
        )

    class Blocks(nn.Module):
        def __init__(self, depth: int, width: int, heads: int, remat: bool):
            super().__init__()
            self.layers = nn.ModuleList([block(width, heads) for _ in range(depth)])
            self.remat = remat

        def forward(self, x):  # [batch, tokens, width]
            for layer in self.layers:
                x = checkpoint(layer, x, use_reentrant=False) if self.remat else layer(x)
            return x

    def table(*shape):
        return nn.Parameter(torch.randn(*shape) * 0.02)

    class FrameTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torchvision.models.resnet18()
            self.backbone.fc = nn.Identity()
            self.project = nn.Linear(512, 512)
            self.position = table(1, args.frames, 512)
            self.blocks = Blocks(4, 512, 8, remat=False)
            self.norm = nn.LayerNorm(512, eps=1e-6)
            self.head = nn.Linear(512, NUM_CLASSES)

        def forward(self, x):
            b, c, t, h, w = x.shape
            frames = self.backbone(x.transpose(1, 2).reshape(b * t, c, h, w)).view(b, t, -1)
            x = self.blocks(self.project(frames) + self.position)
            return self.head(self.norm(x).mean(1))

    class ViViT(nn.Module):
        def __init__(self, factorised: bool):
            super().__init__()
            options, remat = VIVIT[args.model], args.remat == "on"
            width, heads, patch = options["width"], options["num_heads"], options["patch"]
            tubelet = (options["tubelet_frames"], patch, patch)
            t, hw = args.frames // tubelet[0], (args.size // patch) ** 2
            self.factorised = factorised
            self.embed = nn.Conv3d(3, width, tubelet, stride=tubelet)
            if factorised:
                self.spatial_cls = table(1, 1, width)
                self.spatial_position = table(1, 1 + hw, width)
                self.spatial = Blocks(options["depth"], width, heads, remat)
                self.spatial_norm = nn.LayerNorm(width, eps=1e-6)
                self.temporal_cls = table(1, 1, width)
                self.temporal_position = table(1, 1 + t, width)
                self.temporal = Blocks(options["temporal_depth"], width, heads, remat)
            else:
                self.position = table(1, t * hw, width)
                self.blocks = Blocks(options["depth"], width, heads, remat)
            self.norm = nn.LayerNorm(width, eps=1e-6)
            self.head = nn.Linear(width, NUM_CLASSES)

        def forward(self, x):
            x = self.embed(x)  # [batch, width, t, h, w]
            b, width, t = x.shape[:3]
            if not self.factorised:
                x = self.blocks(x.flatten(2).transpose(1, 2) + self.position)
                return self.head(self.norm(x).mean(1))
            x = x.flatten(3).permute(0, 2, 3, 1).reshape(b * t, -1, width)
            x = torch.cat([self.spatial_cls.expand(b * t, -1, -1), x], 1) + self.spatial_position
            x = self.spatial_norm(self.spatial(x)[:, 0]).view(b, t, width)
            x = torch.cat([self.temporal_cls.expand(b, -1, -1), x], 1) + self.temporal_position
            return self.head(self.norm(self.temporal(x)[:, 0]))

    if args.model == "transformer_resnet18":
        return FrameTransformer()
    return ViViT(factorised=args.model == "vivit_factorised")


def run_torch(args) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_cuda = device.type == "cuda"
    dtype = args.dtype or ("bfloat16" if on_cuda else "float32")
    # channels_last_3d is what cuDNN's fast bf16 kernels want for 3D convolutions; on CPU, and
    # for the Transformers (whose one convolution is the tubelet embedding), the default layout.
    on_cuda_3d = on_cuda and args.model in TORCHVISION_VIDEO
    layout = torch.channels_last_3d if on_cuda_3d else torch.contiguous_format
    torch.manual_seed(0)
    model = _torch_model(args).to(device, memory_format=layout).train()
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
        command += ["--model", args.model, "--remat", args.remat]
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
            "on" if r["remat"] else "off",
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
            r["temp_bytes"] / 2**30 if r["temp_bytes"] is not None else None,
            r["compile_seconds"],
        ]
        for r in results
    ]
    report.print_table(
        f"{first['model']} train step, batch {first['batch']}, clip {clip}, width {first['width']}",
        [
            "framework",
            "remat",
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
            "XLA temp GiB",
            "compile s",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="r3d_18")
    parser.add_argument(
        "--remat",
        choices=("off", "on", "both"),
        default="off",
        help="recompute Transformer blocks in the backward pass (ViViTs); both: each way",
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, help="clip length (8; 16 for the ViViTs)")
    parser.add_argument("--size", type=int, help="clip height and width (56; 224 for the ViViTs)")
    parser.add_argument("--width", type=int, default=64, help="CNN width (64 as published)")
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
    default_frames, default_size = DEFAULT_CLIP[args.model]
    args.frames = args.frames or default_frames
    args.size = args.size or default_size
    report.warn_if_busy()
    if args.width != 64 and (args.model in VIVIT or args.framework != "jax"):
        # torchvision's networks are fixed at the published width, and the ViViTs are ViT-B.
        parser.error("--width other than 64 is for the CNNs with --framework jax")
    if args.remat != "off" and args.model not in VIVIT:
        parser.error(f"--remat is a switch of the ViViTs; {args.model} has none")
    if args.remat == "both" and args.framework != "both":
        parser.error("--remat both runs child processes: use it with --framework both")
    if args.model == "i3d" and args.framework == "torch":
        parser.error("torchvision has no I3D: --model i3d runs with --framework jax")

    if args.framework == "jax":
        results = [run_jax(args)]
    elif args.framework == "torch":
        results = [run_torch(args)]
    else:
        with_torch = bool(
            importlib.util.find_spec("torch") and importlib.util.find_spec("torchvision")
        )
        if not with_torch:
            print("torch/torchvision are not installed: the PyTorch comparison is skipped")
        elif args.model == "i3d":
            print("torchvision has no I3D: the PyTorch comparison is skipped")
            with_torch = False
        results, requested = [], args.remat
        for remat in ("off", "on") if requested == "both" else (requested,):
            args.remat = remat  # what the children are told
            jax_result = _run_child(args, "jax", ["--dtype", args.dtype] if args.dtype else [])
            results.append(jax_result)
            if with_torch:
                # The same dtype as JAX chose, on the matching kind of device.
                device = "cpu" if jax_result["device"] == "cpu" else "cuda"
                extra = ["--dtype", jax_result["dtype"], "--device", device]
                results.append(_run_child(args, "torch", extra))
        args.remat = requested
    _print_results(results)
    report.write_json(
        args.json, {"benchmark": "train_step", "args": vars(args), "results": results}
    )


if __name__ == "__main__":
    main()
