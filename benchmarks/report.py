"""What every benchmark shares: a plain-text table, the JSON it writes, and peak memory."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
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
