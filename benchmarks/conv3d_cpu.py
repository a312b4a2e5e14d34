"""XLA:CPU's native 3D convolution vs the temporal-taps decomposition, on R3D-18's layers.

`vssl_jax.models.layers.Conv3D` runs on CPU as a sum of 2D convolutions, one per temporal tap
(`conv3d_temporal_taps`), instead of XLA's native 3D convolution (`conv3d_native`). This measures
both on every distinct convolution shape of R3D-18 for a given input: the forward pass, the
gradient with respect to the input and the gradient with respect to the kernel, each in GFLOP/s
(2 * multiply-adds of the convolution as written, zero padding included, so both
implementations are charged the same work). The stem's gradient with respect to its input (the
video) is skipped: training never computes it. The "R3D-18 total" rows weight each shape by how
often one training step uses it (the 1x1x1 shortcuts, a few percent of the work, are left out).

Then the whole R3D-18 train step (`benchmarks/train_step.py`, JAX only) runs once per
implementation, each in its own process with `VSSL_JAX_CONV3D` set, because `Conv3D` reads the
choice when it is traced; and once more with taps on jaxlib's default 2D convolutions (YNNPACK),
which `import vssl_jax` turns off (`vssl_jax.CPU_CONVOLUTION_FLAG`), where that flag is in force.

    python -m benchmarks.conv3d_cpu                              # batch 4, 8x56x56, ~2 min
    python -m benchmarks.conv3d_cpu --frames 16 --size 112 --batch 1 --no-train-step
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import jax

import vssl_jax
from benchmarks import report
from vssl_jax.models import layers

IMPLEMENTATIONS = {"native": layers.conv3d_native, "taps": layers.conv3d_temporal_taps}
PASSES = ("forward", "grad_input", "grad_kernel")


@dataclasses.dataclass(frozen=True)
class ConvShape:
    name: str
    uses: int  # How many convolutions of R3D-18 have this shape.
    input_shape: tuple[int, int, int, int, int]  # [batch, time, height, width, channels]
    out_channels: int
    kernel: tuple[int, int, int]
    strides: tuple[int, int, int]
    # The stem's input is the video: training never asks for its gradient, so it is not timed.
    needs_input_grad: bool = True

    @property
    def padding(self) -> tuple[tuple[int, int], ...]:
        return tuple((k // 2, k // 2) for k in self.kernel)

    def output_shape(self) -> tuple[int, ...]:
        batch, *spatial, _ = self.input_shape
        out = [
            (n + 2 * (k // 2) - k) // s + 1
            for n, k, s in zip(spatial, self.kernel, self.strides, strict=True)
        ]
        return (batch, *out, self.out_channels)

    def flops(self) -> float:
        """2 * multiply-adds of one pass; the two gradients do the same number as the forward."""
        out_elements = 1
        for n in self.output_shape():
            out_elements *= n
        taps = self.kernel[0] * self.kernel[1] * self.kernel[2]
        return 2.0 * out_elements * taps * self.input_shape[-1]


def r3d18_shapes(batch: int, frames: int, size: int, width: int) -> list[ConvShape]:
    """The distinct 3D convolutions of R3D-18 (as `vssl_jax.models.resnet3d`) on one input."""
    t, s = frames, (size + 1) // 2  # After the stem's (1, 2, 2) stride.
    shapes = [
        ConvShape(
            "stem 3x7x7 /1,2,2",
            1,
            (batch, frames, size, size, 3),
            width,
            (3, 7, 7),
            (1, 2, 2),
            needs_input_grad=False,
        )
    ]
    shapes.append(
        ConvShape("stage1 3x3x3", 4, (batch, t, s, s, width), width, (3, 3, 3), (1, 1, 1))
    )
    channels = width
    for stage in (2, 3, 4):
        out = channels * 2
        shapes.append(
            ConvShape(
                f"stage{stage} 3x3x3 /2", 1, (batch, t, s, s, channels), out, (3, 3, 3), (2, 2, 2)
            )
        )
        t, s, channels = (t + 1) // 2, (s + 1) // 2, out
        shapes.append(
            ConvShape(
                f"stage{stage} 3x3x3", 3, (batch, t, s, s, channels), channels, (3, 3, 3), (1, 1, 1)
            )
        )
    return shapes


def _pass_fn(conv, shape: ConvShape, which: str):
    """A jitted function of (x, kernel, cotangent) computing one pass of `conv`."""

    def apply(x, kernel):
        return conv(x, kernel, shape.strides, shape.padding)

    if which == "forward":
        return jax.jit(lambda x, kernel, _: apply(x, kernel))
    if which == "grad_input":
        return jax.jit(lambda x, kernel, g: jax.vjp(lambda x: apply(x, kernel), x)[1](g)[0])
    return jax.jit(lambda x, kernel, g: jax.vjp(lambda k: apply(x, k), kernel)[1](g)[0])


def time_pass(conv, shape: ConvShape, which: str, reps: int) -> float:
    """Best seconds of one pass over `reps` calls, after a first call that compiles.

    The best rather than the median: on a shared machine, other processes only ever add time.
    """
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, shape.input_shape)
    kernel = jax.random.normal(kk, (*shape.kernel, shape.input_shape[-1], shape.out_channels))
    cotangent = jax.random.normal(kg, shape.output_shape())
    fn = _pass_fn(conv, shape, which)
    fn(x, kernel, cotangent).block_until_ready()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn(x, kernel, cotangent).block_until_ready()
        times.append(time.perf_counter() - start)
    return min(times)


# Whole-step runs: name -> (VSSL_JAX_CONV3D, XLA_FLAGS to add).
STEP_RUNS = {
    "native": ("native", ""),
    "taps": ("taps", ""),
    "taps_ynnpack": ("taps", "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"),
}


def train_step_result(args, implementation: str, xla_flags: str = "") -> dict:
    """Runs benchmarks/train_step.py (JAX only) with `VSSL_JAX_CONV3D=implementation` and
    `xla_flags` added to XLA_FLAGS."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "step.json")
        command = [sys.executable, "-m", "benchmarks.train_step", "--framework", "jax"]
        for flag in ("batch", "frames", "size", "width", "steps"):
            command += [f"--{flag}", str(getattr(args, flag))]
        env = {**os.environ, "VSSL_JAX_CONV3D": implementation}
        if xla_flags:
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
        subprocess.run(command + ["--json", out], env=env, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return json.load(f)["results"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=56, help="input height and width")
    parser.add_argument("--width", type=int, default=64, help="R3D-18 width (64 as published)")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per pass (best kept)")
    parser.add_argument("--steps", type=int, default=5, help="timed train steps per implementation")
    parser.add_argument(
        "--no-train-step", action="store_true", help="skip the whole-train-step comparison"
    )
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args()
    report.warn_if_busy()
    if jax.default_backend() != "cpu":
        print(f"note: the default backend is {jax.default_backend()}, not cpu")

    shapes = r3d18_shapes(args.batch, args.frames, args.size, args.width)
    layer_results = []
    for shape in shapes:
        for which in PASSES:
            if which == "grad_input" and not shape.needs_input_grad:
                continue
            seconds = {
                name: time_pass(conv, shape, which, args.reps)
                for name, conv in IMPLEMENTATIONS.items()
            }
            layer_results.append(
                {
                    "layer": shape.name,
                    "uses": shape.uses,
                    "pass": which,
                    "flops": shape.flops(),
                    "seconds": seconds,
                }
            )

    def row(layer, which, flops, native, taps):
        return [layer, which, flops / 1e9, flops / native / 1e9, flops / taps / 1e9, native / taps]

    rows = [
        row(r["layer"], r["pass"], r["flops"], r["seconds"]["native"], r["seconds"]["taps"])
        for r in layer_results
    ]
    for which in PASSES:
        picked = [r for r in layer_results if r["pass"] == which]
        flops = sum(r["uses"] * r["flops"] for r in picked)
        native = sum(r["uses"] * r["seconds"]["native"] for r in picked)
        taps = sum(r["uses"] * r["seconds"]["taps"] for r in picked)
        rows.append(row("R3D-18 total", which, flops, native, taps))
    input_desc = (
        f"input [{args.batch}, {args.frames}, {args.size}, {args.size}, 3], width {args.width}"
    )
    report.print_table(
        f"3D convolutions of R3D-18 on {jax.devices()[0].device_kind} ({input_desc})",
        ["layer", "pass", "GFLOP", "native GFLOP/s", "taps GFLOP/s", "taps speed-up"],
        rows,
    )

    step_results = {}
    if not args.no_train_step:
        runs = dict(STEP_RUNS)
        if vssl_jax.CPU_CONVOLUTION_FLAG not in os.environ.get("XLA_FLAGS", "").split():
            del runs["taps_ynnpack"]  # This jaxlib may not know the option.
        step_results = {name: train_step_result(args, *run) for name, run in runs.items()}
        native = step_results["native"]["step_seconds"]
        report.print_table(
            f"R3D-18 train step (benchmarks/train_step.py, batch {args.batch})",
            [
                "run",
                "VSSL_JAX_CONV3D",
                "XLA_FLAGS added",
                "step s",
                "clips/s",
                "compile s",
                "speed-up",
            ],
            [
                [
                    name,
                    *runs[name],
                    r["step_seconds"],
                    r["clips_per_second"],
                    r["compile_seconds"],
                    native / r["step_seconds"],
                ]
                for name, r in step_results.items()
            ],
        )
    report.write_json(
        args.json,
        {
            "benchmark": "conv3d_cpu",
            "device": jax.devices()[0].device_kind,
            "args": vars(args),
            "layers": layer_results,
            "train_step": step_results,
        },
    )


if __name__ == "__main__":
    main()
