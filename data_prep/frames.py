"""Frame folders: a video stored as one image file per frame, as the seeds' codebases keep them.

A frame folder holds the frames of one video as JPEG (or PNG) files numbered in frame order:
`image_00001.jpg` (3D-ResNets-PyTorch), `frame000001.jpg` (the two-stream `jpegs_256` release),
`img_00001.jpg` (TSN / mmaction2 rawframes, whose folders also hold `flow_x_*` / `flow_y_*`
optical-flow images, which are ignored). Files that are not numbered images are ignored too.

The frame rate is not stored anywhere in such a folder: the caller says it (`source_fps`), and
frame i (0-based, in number order) is at time i / source_fps. Resampling to another fps follows
video_io's sample-and-hold rule, so a frame folder and the video it was extracted from give the
same frames.

When the frames already have the requested short side (or no resize is asked for), their JPEG
bytes go into the record as they are: no decode, no re-encode. Otherwise (and always for PNG)
each frame is decoded, resized with the same filter as videos and JPEG-encoded, one at a time.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
import simplejpeg

from vssl_jax import video_io

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
# UCF101's rate (and the most common one of the seeds' frame releases); HMDB51 and most of
# Kinetics are 30 fps. See `default_source_fps`.
DEFAULT_SOURCE_FPS = 25.0
_30_FPS_DATASETS = ("hmdb", "kinetics")

_NUMBERED = re.compile(r"(?P<prefix>.*?)(?P<number>\d+)(?P<ext>\.(?:jpe?g|png))", re.IGNORECASE)
# Optical-flow images that TSN / mmaction2 extract next to the RGB frames.
_FLOW = re.compile(r"(flow.*|[xyuv]_?)", re.IGNORECASE)
_JPEG_END = b"\xff\xd9"


class FrameFolderError(Exception):
    """A frame folder that cannot be used; str() is `"<folder>: <problem>"`."""

    def __init__(self, path: str, problem: str):
        super().__init__(path, problem)  # Both pieces, so it pickles across processes.
        self.path = path
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def default_source_fps(input_path: str, input_format: str) -> float:
    """The frame rate assumed for frame folders when `--source-fps` is not given.

    30 fps when the input names HMDB51 or Kinetics (`--format hmdb51`, or 'hmdb' / 'kinetics'
    in the input's file name, as in `hmdb51_1.json`), else 25 fps (UCF101).
    """
    name = os.path.basename(os.path.normpath(input_path)).lower()
    if input_format == "hmdb51" or any(d in name for d in _30_FPS_DATASETS):
        return 30.0
    return DEFAULT_SOURCE_FPS


def _numbered_images(names) -> dict[tuple[str, str], list[tuple[int, str]]]:
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for name in names:
        if name.startswith("."):
            continue
        match = _NUMBERED.fullmatch(name)
        if match is None or _FLOW.fullmatch(match["prefix"]):
            continue
        ext = match["ext"].lower().replace(".jpeg", ".jpg")
        groups.setdefault((match["prefix"], ext), []).append((int(match["number"]), name))
    return groups


def list_frames(folder: str) -> list[str]:
    """The frame file names of a frame folder, in frame order.

    Raises FrameFolderError when the folder holds no numbered images, numbered images of more
    than one naming pattern, or numbers with a gap or a repeat (a frame is missing).
    """
    try:
        names = os.listdir(folder)
    except OSError as e:
        raise FrameFolderError(folder, f"cannot list the folder ({e.strerror})") from e
    groups = _numbered_images(names)
    if not groups:
        raise FrameFolderError(folder, "no frame images (numbered .jpg/.jpeg/.png files)")
    if len(groups) > 1:
        patterns = ", ".join(f"{prefix}N{ext}" for prefix, ext in sorted(groups))
        raise FrameFolderError(folder, f"frames named in several ways ({patterns}); keep one")
    [numbered] = groups.values()
    numbered.sort()
    for (previous, _), (number, name) in zip(numbered, numbered[1:], strict=False):
        if number != previous + 1:
            problem = "repeats" if number == previous else f"jumps from {previous} to {number}"
            raise FrameFolderError(folder, f"frame numbering {problem} at {name} (missing frames)")
    return [name for _, name in numbered]


def _selected(count: int, source_fps: Fraction, fps: Fraction | None) -> list[int]:
    """Which of `count` frames at `source_fps` make the output, by video_io's rule.

    fps None: every frame. Otherwise output time t_k = k / fps for every t_k before the end
    (count / source_fps), holding the latest frame at or before t_k: floor(t_k * source_fps).
    """
    if fps is None:
        return list(range(count))
    num_out = math.ceil(count * fps / source_fps)
    return [math.floor(k * source_fps / fps) for k in range(num_out)]


def _fits(header: tuple, short_side: int | None) -> bool:
    """True when a JPEG can go into a record as it is: 3-channel and already the right size."""
    height, width, colorspace, _ = header
    return colorspace == "YCbCr" and (short_side is None or min(height, width) == short_side)


def _decode(data: bytes, name: str, folder: str) -> np.ndarray:
    """Any frame image -> [height, width, 3] uint8 RGB."""
    if name.lower().endswith((".jpg", ".jpeg")):
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            pass  # CMYK and other rarities: PIL below.
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as e:
        raise FrameFolderError(folder, f"{name}: not a readable image ({e})") from e


class _Reencoder:
    """Decodes, resizes (video_io's filter: area when shrinking) and JPEG-encodes frames."""

    def __init__(self, folder: str, short_side: int | None, quality: int):
        self._folder = folder
        self._quality = quality
        # The converter videos go through, so frames resized here match a resized video.
        self._to_rgb = video_io._RGBConverter(short_side)

    def __call__(self, data: bytes, name: str) -> bytes:
        rgb = _decode(data, name, self._folder)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        return simplejpeg.encode_jpeg(
            self._to_rgb(frame), quality=self._quality, colorspace="RGB", colorsubsampling="420"
        )


def _read(folder: str, name: str) -> bytes:
    try:
        with open(os.path.join(folder, name), "rb") as f:
            return f.read()
    except OSError as e:
        raise FrameFolderError(folder, f"{name}: cannot read ({e.strerror})") from e


def _jpeg_header(data: bytes, name: str, folder: str) -> tuple | None:
    """The JPEG's (height, width, colorspace, subsampling); None for a PNG."""
    if name.lower().endswith(".png"):
        return None
    try:
        header = simplejpeg.decode_jpeg_header(data)
    except ValueError as e:
        raise FrameFolderError(folder, f"{name}: not a readable JPEG ({e})") from e
    # A cut file still has a header; the end-of-image marker tells a complete one.
    if not data.rstrip(b"\0\r\n ").endswith(_JPEG_END):
        raise FrameFolderError(folder, f"{name}: truncated JPEG (no end-of-image marker)")
    return header


def iter_jpegs(
    folder: str,
    *,
    frame_range: tuple[int, int] | None = None,
    source_fps: float,
    fps: float | None,
    short_side: int | None,
    quality: int = 90,
) -> Iterator[tuple[bytes, bool]]:
    """Yields `(JPEG bytes, copied)` for each output frame; `copied` when passed through as is.

    `frame_range` = (first, stop) keeps frames first..stop-1 (0-based, in number order) before
    resampling; it is an error when the folder has fewer than `stop` frames. A frame repeated by
    upsampling is yielded as the same bytes. Frames are read, and if needed re-encoded, one at a
    time. Raises FrameFolderError for a damaged folder or frame.
    """
    names = list_frames(folder)
    first, stop = frame_range if frame_range is not None else (0, len(names))
    if stop > len(names):
        raise FrameFolderError(folder, f"has {len(names)} frames, the list says {stop}")
    if not 0 <= first < stop:
        raise FrameFolderError(folder, f"frame range {first}..{stop} is empty")
    names = names[first:stop]
    rate = Fraction(source_fps).limit_denominator(1_000_000)
    wanted = _selected(
        len(names), rate, None if fps is None else Fraction(fps).limit_denominator(1_000_000)
    )

    reencode: _Reencoder | None = None
    size: tuple[int, int] | None = None
    last_index, last = -1, b""
    for index in wanted:
        if index == last_index:
            yield last, reencode is None
            continue
        name = names[index]
        data = _read(folder, name)
        header = _jpeg_header(data, name, folder)
        if header is not None:
            if size is None:
                size = header[:2]
            elif header[:2] != size:
                raise FrameFolderError(
                    folder,
                    f"{name} is {header[1]}x{header[0]}, earlier frames are {size[1]}x{size[0]}",
                )
        if reencode is None and (header is None or not _fits(header, short_side)):
            if last_index >= 0:
                # Frames before this one were copied; a video is all one or all the other.
                raise FrameFolderError(
                    folder, f"{name} is not a plain colour JPEG like the frames before it"
                )
            reencode = _Reencoder(folder, short_side, quality)
        last = data if reencode is None else reencode(data, name)
        last_index = index
        yield last, reencode is None


def read_frame_folder(
    folder: str,
    *,
    frame_range: tuple[int, int] | None = None,
    source_fps: float,
    fps: float | None,
    short_side: int | None,
    quality: int = 90,
) -> tuple[video_io.DecodedClip, bool]:
    """A frame folder as a clip of JPEG frames, and whether its JPEGs were copied as they are.

    Times follow video_io: the first kept frame is at first / source_fps seconds, and the clip
    ends one output frame period after its last frame.
    """
    if source_fps <= 0:
        raise FrameFolderError(folder, f"--source-fps must be positive, got {source_fps}")
    jpegs, copied = [], True
    for jpeg, as_is in iter_jpegs(
        folder,
        frame_range=frame_range,
        source_fps=source_fps,
        fps=fps,
        short_side=short_side,
        quality=quality,
    ):
        jpegs.append(jpeg)
        copied = copied and as_is
    rate = fps if fps is not None else source_fps
    start = (frame_range[0] if frame_range else 0) / source_fps
    clip = video_io.DecodedClip(
        frames=jpegs, fps=rate, start_time=start, end_time=start + len(jpegs) / rate
    )
    return clip, copied
