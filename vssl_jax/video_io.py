"""Decoding raw video files: the one module that opens them (PyAV).

data_prep uses it to turn videos into JPEG frames for the shards, and `predict` uses it to read a
video straight from disk, so both see the same frames, timestamps and resizing.

Timestamps are seconds from the start of the video stream (its first presentation time is 0).

Frames come out the way a player shows them: a display matrix in the container (phones record
portrait video as landscape frames plus a 90-degree rotation) is applied to every frame, in
right-angle steps (rotations and mirrors; another angle is rounded to the nearest right angle).
`probe` reports the coded size, before that rotation.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
import simplejpeg
from av.video.reformatter import VideoReformatter

# Frame rates and user times are turned into exact fractions so that a frame at 0.1 s and a
# requested start of 0.1 s compare equal; a microsecond grid is finer than any frame rate.
_MAX_DENOMINATOR = 1_000_000
# Frame threading keeps about one decoded frame per thread in flight (up to 17 on a big machine);
# above this many pixels (4K DCI) the decoder uses slice threads only, which keep none extra: an
# 8K frame is about 50 MB, and every conversion worker decodes one video.
_FRAME_THREADING_MAX_PIXELS = 4096 * 2160


class VideoDecodeError(Exception):
    """A file that cannot be decoded as a video; str() is `"<path>: <problem>"`."""

    def __init__(self, path: str, problem: str):
        # Both pieces go to Exception so the error pickles across worker processes.
        super().__init__(path, problem)
        self.path = path
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    fps: float  # Average frame rate of the video stream.
    num_frames: int  # From the container's frame count when it has one, else an estimate.
    duration: float  # Seconds.
    width: int
    height: int


@dataclasses.dataclass(frozen=True)
class DecodedClip:
    frames: list[bytes]  # JPEG-encoded RGB frames, in time order.
    fps: float  # Frame rate of `frames`: the requested fps, or the source's average rate.
    start_time: float  # Seconds into the video of the first frame.
    end_time: float  # The last frame's time plus one frame period (1 / fps).


def _fraction(seconds: float) -> Fraction:
    return Fraction(seconds).limit_denominator(_MAX_DENOMINATOR)


def _problem(error: Exception) -> str:
    # PyAV's str() repeats the path and an errno; the strerror alone reads as one clean line.
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _open(path: str) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoDecodeError(path, f"cannot open as a video ({_problem(e)})") from e
    format_name = container.format.name
    # FFmpeg opens still images as one-frame videos; a stray image must not become a record.
    if format_name == "image2" or format_name.endswith("_pipe"):
        container.close()
        raise VideoDecodeError(path, f"is a still image ({format_name}), not a video")
    streams = [
        s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
    ]
    if not streams:
        container.close()
        raise VideoDecodeError(path, "has no video stream")
    stream = streams[0]
    pixels = (stream.codec_context.width or 0) * (stream.codec_context.height or 0)
    stream.thread_type = "SLICE" if pixels > _FRAME_THREADING_MAX_PIXELS else "AUTO"
    return container, stream


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return None


def _info(path: str, container, stream) -> VideoInfo:
    rate = _frame_rate(stream)
    if rate is None:
        raise VideoDecodeError(path, "video stream has no frame rate")
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    num_frames = stream.frames
    if not num_frames and duration:
        num_frames = round(duration * rate)
    elif not num_frames:
        # Neither a frame count nor a duration (raw elementary streams): count packets.
        try:
            num_frames = sum(1 for packet in container.demux(stream) if packet.size)
        except av.FFmpegError as e:
            raise VideoDecodeError(path, f"cannot read packets ({_problem(e)})") from e
        duration = float(num_frames / rate)
    width, height = stream.codec_context.width, stream.codec_context.height
    if not width or not height:
        raise VideoDecodeError(path, "video stream has no frame size")
    return VideoInfo(
        fps=float(rate), num_frames=num_frames, duration=duration, width=width, height=height
    )


def probe(path: str) -> VideoInfo:
    """Reads a video's frame rate, frame count, duration and size without decoding frames."""
    container, stream = _open(path)
    with container:
        return _info(path, container, stream)


def _resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def _orientation(frame: av.VideoFrame) -> tuple[bool, int, int] | None:
    """How to turn a decoded picture as its display matrix says: (transpose, row step, column
    step), or None to leave it as it is.

    The matrix maps a coded pixel (x, y) to the displayed (a x + c y, b x + d y) (plus an
    offset; FFmpeg's layout [a b u; c d v; x y w], 16.16 fixed point, y pointing down), so a
    90-degree counter-clockwise rotation is a = d = 0, b = -1, c = 1. Snapped to the nearest
    right angle: the matrix is axis-aligned when |a| >= |b|.
    """
    side_data = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    if side_data is None:
        return None
    a, b, _, c, d = np.frombuffer(bytes(side_data), dtype="<i4", count=5).tolist()
    if abs(a) >= abs(b):  # Displayed x follows coded x: maybe mirrored.
        turn = (False, -1 if d < 0 else 1, -1 if a < 0 else 1)
    else:  # Displayed x follows coded y: transposed, then mirrored along each axis by the signs.
        turn = (True, -1 if b < 0 else 1, -1 if c < 0 else 1)
    return None if turn == (False, 1, 1) else turn


class _RGBConverter:
    """Turns decoded frames into C-contiguous [height, width, 3] uint8 RGB arrays, as displayed.

    One per decode: the reformatter keeps its scaling context from frame to frame, where
    `frame.reformat` builds a new one for every frame (2-4x slower at these sizes). The resize
    comes before the rotation (the short side is the same either way), on the smaller picture.
    """

    def __init__(self, short_side: int | None):
        self._short_side = short_side
        self._reformatter = VideoReformatter()
        self._turn: tuple[bool, int, int] | None = None
        self._turn_read = False

    def _orient(self, rgb: np.ndarray, frame: av.VideoFrame) -> np.ndarray:
        if not self._turn_read:
            # Read once, from the first frame: the matrix belongs to the stream (FFmpeg copies it
            # to every frame), and PyAV's `frame.side_data` ties the frame into a reference cycle
            # that keeps it (50 MB at 8K) in memory until the garbage collector runs.
            self._turn, self._turn_read = _orientation(frame), True
        if self._turn is None:
            return rgb
        transpose, rows, columns = self._turn
        if transpose:
            rgb = rgb.transpose(1, 0, 2)
        return np.ascontiguousarray(rgb[::rows, ::columns])

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self._short_side is None:
            return self._orient(np.ascontiguousarray(frame.to_ndarray(format="rgb24")), frame)
        width, height = _resized_size(frame.width, frame.height, self._short_side)
        shrinking = width * height < frame.width * frame.height
        resized = self._reformatter.reformat(
            frame,
            width=width,
            height=height,
            format="rgb24",
            interpolation="AREA" if shrinking else "BILINEAR",
        )
        # Rows of the reformatted frame are padded to an alignment; the JPEG encoder needs them
        # packed.
        return self._orient(np.ascontiguousarray(resized.to_ndarray()), frame)


def _decoded(
    path: str, container, stream, start: Fraction
) -> Iterator[tuple[Fraction, av.VideoFrame]]:
    """Every frame from the keyframe at or before `start` on, with its time from stream start."""
    origin = stream.start_time or 0
    time_base = stream.time_base
    rate = _frame_rate(stream)
    previous: Fraction | None = None
    count = 0
    try:
        if start > 0:
            try:
                container.seek(origin + int(start / time_base), stream=stream, backward=True)
            except av.FFmpegError:
                # Some containers cannot seek; decoding from the beginning gives the same frames.
                container.seek(0)
        for packet in container.demux(stream):
            # With frame threading the decoder drops its errors, so a file cut short would end
            # quietly; the demuxer still flags the partial packet it read at the cut.
            if packet.is_corrupt:
                raise VideoDecodeError(
                    path,
                    f"corrupt or truncated data after {count} frames (packet at byte {packet.pos})",
                )
            for frame in packet.decode():
                if frame.pts is not None:
                    time = (frame.pts - origin) * time_base
                elif previous is not None and rate:
                    time = previous + 1 / rate
                else:
                    time = Fraction(0)
                previous = time
                count += 1
                yield time, frame
    except av.FFmpegError as e:
        where = f" after {count} frames ({float(previous):.3f} s)" if previous is not None else ""
        raise VideoDecodeError(path, f"decoding failed{where}: {_problem(e)}") from e


class _Held:
    """A decoded frame kept for sample-and-hold; converted to RGB once, and only if output."""

    def __init__(self, time: Fraction, frame: av.VideoFrame, to_rgb: _RGBConverter):
        self.time = time
        self.frame = frame
        self._to_rgb = to_rgb
        self._rgb: np.ndarray | None = None

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = self._to_rgb(self.frame)
        return self._rgb


def _frame_end(time: Fraction, frame: av.VideoFrame, stream) -> Fraction:
    """When a frame stops being displayed: its time plus its duration."""
    if frame.duration and frame.time_base:
        return time + frame.duration * frame.time_base
    rate = _frame_rate(stream)
    return time + 1 / rate if rate else time


def _frames(
    path: str,
    container,
    stream,
    *,
    fps: float | None,
    short_side: int | None,
    start_time: float | None,
    end_time: float | None,
    source_grid: bool = False,
) -> Iterator[tuple[float, np.ndarray]]:
    """iter_frames's frames; with `source_grid` (and no fps), decode_to_jpegs's uniform ones."""
    start = _fraction(start_time) if start_time else Fraction(0)
    end = _fraction(end_time) if end_time is not None else None
    if end is not None and end <= start:
        raise VideoDecodeError(
            path, f"end time {end_time} s is not after start time {start_time} s"
        )
    to_rgb = _RGBConverter(short_side)
    yielded = 0

    if fps is None and source_grid:
        # Output times t_k = t_0 + k / rate from the first frame in range on; output frame k is
        # the decoded frame nearest to t_k (the earlier of two as near). A constant-rate stream
        # gives each of its frames once, whatever the rounding of its timestamps; a variable-rate
        # one is evened out (frames repeated in slow stretches, dropped in fast ones).
        rate = _frame_rate(stream)
        if rate is None:
            raise VideoDecodeError(path, "video stream has no frame rate; pass an fps")
        step = 1 / rate
        first = target = Fraction(0)
        held = None
        for time, frame in _decoded(path, container, stream, start):
            if time < start:
                continue
            if end is not None and time >= end:
                break
            if held is None:
                first = target = time
            else:
                middle = (held.time + time) / 2
                while target <= middle:
                    yield float(target), held.rgb()
                    yielded += 1
                    target = first + yielded * step
            held = _Held(time, frame, to_rgb)
        if held is not None:
            # The last frame covers targets up to its end, less half a period so that a
            # rounded-up duration does not add a frame; and not past the trim.
            limit = _frame_end(held.time, held.frame, stream) - step / 2
            if end is not None:
                limit = min(limit, end)
            while target < limit or target == held.time:
                yield float(target), held.rgb()
                yielded += 1
                target = first + yielded * step
    elif fps is None:
        for time, frame in _decoded(path, container, stream, start):
            if time < start:
                continue
            if end is not None and time >= end:
                break
            yielded += 1
            yield float(time), to_rgb(frame)
    else:
        if fps <= 0:
            raise VideoDecodeError(path, f"requested fps must be positive, got {fps}")
        step = 1 / _fraction(fps)
        target = start  # t_k = start + k * step.
        held: _Held | None = None  # The latest decoded frame.
        for time, frame in _decoded(path, container, stream, start):
            if end is not None and target >= end:
                break
            current = _Held(time, frame, to_rgb)
            while target < time and (end is None or target < end):
                # No frame yet at or before the target (the stream starts late): hold the first.
                yield float(target), (held or current).rgb()
                yielded += 1
                target = start + yielded * step
            held = current
        if held is not None:
            # Past the last frame: it stays on screen until the video ends.
            limit = _frame_end(held.time, held.frame, stream)
            if end is not None:
                limit = min(limit, end)
            while target < limit:
                yield float(target), held.rgb()
                yielded += 1
                target = start + yielded * step

    if not yielded:
        if not start and end is None:
            raise VideoDecodeError(path, "no decodable frames")
        where = f" between {float(start)} s and {float(end)} s" if end is not None else ""
        if start and end is None:
            where = f" after {float(start)} s"
        raise VideoDecodeError(path, f"no frames{where}")


def iter_frames(
    path: str,
    *,
    fps: float | None = None,
    short_side: int | None = None,
    start_time: float | None = None,
    end_time: float | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yields `(time in seconds, [height, width, 3] uint8 RGB frame)` in time order.

    Frames are decoded one at a time and resized as they come, so memory stays bounded.

    With `fps=None` every source frame whose presentation time lies in [start_time, end_time) is
    yielded with its own time. With `fps` the output is resampled by sample-and-hold: output
    times are t_k = start_time + k / fps for every t_k < end_time (default: the end of the video,
    i.e. the last frame's time plus its duration), and output frame k is the decoded frame with
    the latest presentation time <= t_k (the first frame, should t_k come before any frame). The
    yielded time is t_k.

    `short_side` resizes every frame so its shorter side has that many pixels, keeping the aspect
    ratio (the longer side rounded to the nearest pixel; area averaging when shrinking). Treat
    the arrays as read-only: a frame that upsampling repeats is yielded as the same array.
    `start_time` seeks to the keyframe before it and decodes forward, dropping earlier frames.

    Raises VideoDecodeError for a file that is not a video, for data that fails to decode (frames
    yielded before the failure are correct), and when no frame falls in the requested range.
    """
    container, stream = _open(path)
    with container:
        yield from _frames(
            path,
            container,
            stream,
            fps=fps,
            short_side=short_side,
            start_time=start_time,
            end_time=end_time,
        )


def decode_to_jpegs(
    path: str,
    *,
    fps: float | None,
    short_side: int | None,
    start_time: float | None = None,
    end_time: float | None = None,
    quality: int = 90,
) -> DecodedClip:
    """Decodes a video (or the [start_time, end_time) range of it) into JPEG frames.

    Frames follow `iter_frames`'s rule and each is JPEG-encoded as soon as it is decoded, so only
    the compressed frames are kept. With `fps=None` the clip is at the source's average frame
    rate: frame k is the decoded frame nearest to t_0 + k / rate (t_0: the first frame in the
    range), which is every frame once for a constant-rate video and evens out a variable-rate
    one, so the clip's frames are always 1 / fps apart.
    """
    container, stream = _open(path)
    with container:
        if fps is not None:
            rate = fps
        elif (source_rate := _frame_rate(stream)) is not None:
            rate = float(source_rate)
        else:
            raise VideoDecodeError(path, "video stream has no frame rate; pass an fps")
        jpegs: list[bytes] = []
        times: list[float] = []
        for time, rgb in _frames(
            path,
            container,
            stream,
            fps=fps,
            short_side=short_side,
            start_time=start_time,
            end_time=end_time,
            source_grid=True,
        ):
            jpegs.append(
                simplejpeg.encode_jpeg(
                    rgb, quality=quality, colorspace="RGB", colorsubsampling="420"
                )
            )
            times.append(time)
    return DecodedClip(frames=jpegs, fps=rate, start_time=times[0], end_time=times[-1] + 1 / rate)
