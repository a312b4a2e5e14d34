"""The built-in demo dataset: real digits moving over real photos, labelled by motion alone.

Everything it is made from ships inside the scikit-learn wheel, so it builds offline in seconds:
handwritten digits from `load_digits` (8x8, grey levels 0..16) composited as bright sprites over
crops of the two photos of `load_sample_images`. Each video is encoded as a real h264 mp4 and then
converted by the same `data_prep` path users run on their own videos.

The class rule (a README-ready statement):

- `move_left`, `move_right`, `move_up`, `move_down`: the digit translates at a constant speed
  (1.5-3 px/frame at 64 px, scaled with the frame size) in that screen direction, wrapping around
  the frame edges (a torus), from a uniformly random start position, at a uniformly random fixed
  orientation.
- `rotate_clockwise`, `rotate_counterclockwise`: the digit rotates, in that sense as seen on
  screen, about the centre of its 8x8 image at a constant angular speed (12-25 deg/frame), from a
  uniformly random start angle, at a uniformly random fixed position (also wrapped around the
  edges).

So in every class any single frame shows a random digit at a uniform position with a uniform
orientation over a random static photo crop: one frame says nothing about the label, and only
the motion across frames does. Which digit it is (0-9) is drawn independently of the label, and
so are the speed, the photo and the crop. The digit is white (alpha from its grey level, about
24 px tall at 64 px) and the photo is darkened to at most 55% grey, so the digit stays the
brightest thing in every frame.

`background="plain"` renders the same videos (same digits, paths and speeds) over a uniform grey
instead of the photo crop: a control for self-supervised methods, whose pretext tasks a static
per-video photo lets them solve by recognising the background instead of following the digit.

`motion="accelerating"` gives every video an arrow of time. With constant speeds every class
played backward is another class (`move_left` <-> `move_right`, up <-> down, the two rotations),
so no clip shows which way time runs and the arrow-of-time pretext task cannot be learnt. In the
accelerating videos the speed grows linearly from half to one and a half times the drawn speed
over the video (the same mean); a backward clip slows down, which no forward clip does. Angular
speeds are drawn from the range divided by 1.5, so the fastest turn stays within 25 deg/frame.
"""

from __future__ import annotations

import argparse
import fractions
import functools
import json
import os
import shutil
import time
import zlib

import av
import numpy as np
from PIL import Image
from scipy import ndimage

CLASS_NAMES: tuple[str, ...] = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_clockwise",
    "rotate_counterclockwise",
)

# Screen directions as (dy, dx) with y pointing down, as in image arrays.
_DIRECTIONS = {
    "move_left": (0.0, -1.0),
    "move_right": (0.0, 1.0),
    "move_up": (-1.0, 0.0),
    "move_down": (1.0, 0.0),
}
# Positive angles turn clockwise on screen (y down): +x goes towards +y.
_SPINS = {"rotate_clockwise": 1.0, "rotate_counterclockwise": -1.0}

SPLITS = ("train", "val")  # The splits `build_demo_dataset` writes.
# Sizes below are for 64 px frames and scale with the frame size.
_REFERENCE_SIZE = 64
_DIGIT_SIZE = 24.0  # Side of the 8x8 digit grid once upscaled, in pixels.
_SPEED_RANGE = (1.5, 3.0)  # px/frame.
# deg/frame. Far below 90, where a digit with 2-fold symmetry (0, 8) could be seen turning either
# way.
_ANGULAR_SPEED_RANGE = (12.0, 25.0)
BACKGROUNDS = ("photo", "plain")
MOTIONS = ("constant", "accelerating")
# Accelerating motion: the speed multiplier runs linearly between these over the video.
_ACCELERATION_SPAN = (0.5, 1.5)
# The plain background: one dark grey, far below the digit's white like the darkened photos.
_PLAIN_LEVEL = 60.0
# The photo is darkened below the digit's white so the digit stays visible wherever it goes.
_BACKGROUND_GAIN = 0.55
# Background crops span 1-4 frame widths of the 640x427 photo before being resized to the frame.
_CROP_SCALE_RANGE = (1.0, 4.0)
_CRF = 18  # x264 quality: high enough that one-pixel motion survives compression.
# The options a demo folder was built with; a later build with other options must not mix in.
_OPTIONS_FILE = "demo.json"


@functools.cache
def _digits() -> np.ndarray:
    """All 1797 scikit-learn digits as alpha maps in [0, 1]. [N, 8, 8] float32."""
    from sklearn.datasets import load_digits

    return (load_digits().images / 16.0).astype(np.float32)


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's two sample photos. Each [427, 640, 3] uint8."""
    from sklearn.datasets import load_sample_images

    return tuple(load_sample_images().images)


def _digit_sprite(digit: np.ndarray, size: int) -> np.ndarray:
    """Smoothly upscales an 8x8 alpha map so its grid spans `_DIGIT_SIZE` scaled to `size`.

    A one-cell zero border lets the cubic spline fall to zero inside the sprite. [S, S] float32.
    """
    zoom = _DIGIT_SIZE * size / _REFERENCE_SIZE / 8.0
    sprite = ndimage.zoom(np.pad(digit, 1), zoom, order=3, grid_mode=True, mode="grid-constant")
    return np.clip(sprite, 0.0, 1.0)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of a random photo, area-resized to the frame. [size, size, 3] float32."""
    photos = _photos()
    photo = photos[rng.integers(len(photos))]
    height, width = photo.shape[:2]
    side = int(size * rng.uniform(*_CROP_SCALE_RANGE))
    side = min(side, height, width)
    top = rng.integers(height - side + 1)
    left = rng.integers(width - side + 1)
    crop = Image.fromarray(photo[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.Resampling.BOX), dtype=np.float32)


def draw_digit(
    sprite: np.ndarray, centres: np.ndarray, angles: np.ndarray, size: int
) -> np.ndarray:
    """The digit's alpha in every frame, placed on a torus (it wraps around the frame edges).

    Args:
      sprite: [S, S] alpha map whose centre is the point placed at `centres`.
      centres: [T, 2] sprite centre (y, x) in pixels per frame; any real values (taken mod size).
      angles: [T] clockwise-on-screen rotation in degrees per frame.
      size: frame side in pixels.

    Returns:
      [T, size, size] float32 alpha in [0, 1].
    """
    grid = np.arange(size, dtype=np.float32)
    # Offsets of every pixel from the centre, wrapped into [-size/2, size/2): the torus.
    dy = (grid[None, :, None] - centres[:, 0, None, None] + size / 2) % size - size / 2
    dx = (grid[None, None, :] - centres[:, 1, None, None] + size / 2) % size - size / 2
    theta = np.deg2rad(angles)[:, None, None]
    cos, sin = np.cos(theta), np.sin(theta)
    # Inverse map: rotate each pixel's offset back by the frame's angle to read the sprite.
    sprite_centre = (sprite.shape[0] - 1) / 2.0
    sprite_x = cos * dx + sin * dy + sprite_centre
    sprite_y = -sin * dx + cos * dy + sprite_centre
    coords = np.stack(np.broadcast_arrays(sprite_y, sprite_x))
    return ndimage.map_coordinates(sprite, coords, order=1, mode="constant", cval=0.0)


def render_video(
    class_name: str,
    rng: np.random.Generator,
    *,
    size: int = 64,
    num_frames: int = 24,
    background: str = "photo",
    motion: str = "constant",
) -> np.ndarray:
    """Renders one demo video of `class_name`; a pure function of `rng`'s state.

    `background` ("photo" or "plain") changes only the pixels behind the digit: the photo crop
    is drawn either way, so both give the same digit, path and speed for the same `rng`.
    `motion` ("constant" or "accelerating") sets how the speed changes over the video.

    Returns:
      [T, H, W, 3] uint8 frames, H = W = `size`.
    """
    if class_name not in CLASS_NAMES:
        raise ValueError(f"unknown demo class '{class_name}'; expected one of {CLASS_NAMES}")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown demo background '{background}'; expected one of {BACKGROUNDS}")
    if motion not in MOTIONS:
        raise ValueError(f"unknown demo motion '{motion}'; expected one of {MOTIONS}")
    scale = size / _REFERENCE_SIZE
    digits = _digits()
    sprite = _digit_sprite(digits[rng.integers(len(digits))], size)
    photo = _background(rng, size) * _BACKGROUND_GAIN
    start = rng.uniform(0.0, size, size=2)  # (y, x)
    angle = rng.uniform(0.0, 360.0)
    steps = travel_in_frames(num_frames, motion)
    if class_name in _DIRECTIONS:
        speed = rng.uniform(*_SPEED_RANGE) * scale
        centres = start + steps[:, None] * speed * np.asarray(_DIRECTIONS[class_name])
        angles = np.full(num_frames, angle)
    else:
        angular_speed = rng.uniform(*_ANGULAR_SPEED_RANGE)
        if motion == "accelerating":
            angular_speed /= _ACCELERATION_SPAN[1]
        centres = np.broadcast_to(start, (num_frames, 2))
        angles = angle + steps * angular_speed * _SPINS[class_name]
    alpha = draw_digit(sprite, centres, angles, size)[..., None]  # [T, H, W, 1]
    if background == "plain":
        photo = np.full_like(photo, _PLAIN_LEVEL)
    frames = photo * (1.0 - alpha) + 255.0 * alpha
    return np.round(frames).astype(np.uint8)


def travel_in_frames(num_frames: int, motion: str) -> np.ndarray:
    """How far the digit has gone at each frame, in frames' worth of its drawn speed. [T].

    Constant: 0, 1, 2, ... Accelerating: the speed multiplier grows linearly from
    `_ACCELERATION_SPAN[0]` at the first frame to `[1]` at the last, so the whole video covers the
    same distance as at constant speed.
    """
    frames = np.arange(num_frames, dtype=np.float64)
    if motion == "constant" or num_frames < 2:
        return frames
    low, high = _ACCELERATION_SPAN
    return low * frames + (high - low) * frames**2 / (2 * (num_frames - 1))


def _video_rng(seed: int, split: str, class_index: int, index: int) -> np.random.Generator:
    # One stream per video, so a video does not change when the counts of others do.
    return np.random.default_rng((seed, zlib.crc32(split.encode()), class_index, index))


def write_video(path: str, frames: np.ndarray, fps: float) -> None:
    """Encodes [T, H, W, 3] uint8 frames as an h264 (yuv420p) mp4 at `fps`."""
    with av.open(path, "w") as container:
        stream = container.add_stream(
            "libx264", rate=fractions.Fraction(fps).limit_denominator(1001)
        )
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(_CRF)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_demo_videos(
    raw_dir: str,
    *,
    videos_per_class: dict[str, int] | None = None,
    size: int = 64,
    num_frames: int = 24,
    fps: float = 8.0,
    seed: int = 0,
    background: str = "photo",
    motion: str = "constant",
) -> list[str]:
    """Writes `<raw_dir>/<split>/<class>/<class>_<index:04d>.mp4` for every split and class.

    Args:
      videos_per_class: videos per class for each split name; default 48 train and 16 val.

    Returns:
      The paths written, in split, class, index order.
    """
    if videos_per_class is None:
        videos_per_class = {"train": 48, "val": 16}
    paths = []
    for split, count in videos_per_class.items():
        for class_index, class_name in enumerate(CLASS_NAMES):
            class_dir = os.path.join(raw_dir, split, class_name)
            os.makedirs(class_dir, exist_ok=True)
            for index in range(count):
                rng = _video_rng(seed, split, class_index, index)
                frames = render_video(
                    class_name,
                    rng,
                    size=size,
                    num_frames=num_frames,
                    background=background,
                    motion=motion,
                )
                path = os.path.join(class_dir, f"{class_name}_{index:04d}.mp4")
                write_video(path, frames, fps)
                paths.append(path)
    return paths


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def build_demo_dataset(
    output_dir: str,
    *,
    train_per_class: int = 48,
    val_per_class: int = 16,
    size: int = 64,
    num_frames: int = 24,
    fps: float = 8.0,
    seed: int = 0,
    background: str = "photo",
    motion: str = "constant",
    workers: int | None = None,
    force: bool = False,
) -> str:
    """Writes the demo videos to `output_dir/raw` and converts them into shards in `output_dir`.

    Does nothing when `output_dir` already holds both splits made with the same options; refuses
    (one-line `ConvertError`) when it holds a demo made with other options, unless `force`, which
    deletes the earlier demo first. Returns `output_dir`.
    """
    from data_prep.convert import convert
    from data_prep.manifest import (
        LABEL_MAP,
        MANIFEST,
        ConvertError,
        write_json,
        write_label_map,
    )
    from data_prep.sources import list_sources

    if train_per_class < 1 or val_per_class < 1:
        raise ConvertError(
            f"{output_dir}: the demo needs at least 1 video per class in each split, "
            f"got {train_per_class} train and {val_per_class} val"
        )
    began = time.monotonic()
    counts = {"train": train_per_class, "val": val_per_class}
    options = {
        "videos_per_class": counts,
        "size": size,
        "num_frames": num_frames,
        "fps": fps,
        "seed": seed,
    }
    # Demos built before these options existed have photos, constant speeds and no such keys.
    if background != "photo":
        options["background"] = background
    if motion != "constant":
        options["motion"] = motion
    options_path = os.path.join(output_dir, _OPTIONS_FILE)
    previous = _read_json(options_path)
    if previous is None and os.path.isdir(output_dir) and os.listdir(output_dir):
        raise ConvertError(
            f"{output_dir}: not empty and not a demo dataset folder (no {_OPTIONS_FILE}); "
            "choose another --output"
        )
    if force and previous is not None:
        shutil.rmtree(output_dir)
    elif previous is not None and previous != options:
        # Same file names, other content: the converter would keep the stale shards.
        raise ConvertError(
            f"{output_dir}: holds a demo built with {previous}; "
            "pass --force to rebuild it, or choose another --output"
        )
    else:
        manifest = _read_json(os.path.join(output_dir, MANIFEST))
        if manifest is not None and set(SPLITS) <= set(manifest["splits"]):
            videos = sum(manifest["splits"][split]["num_videos"] for split in SPLITS)
            print(
                f"demo dataset: {output_dir} already holds it ({videos} videos); nothing to do "
                f"({time.monotonic() - began:.1f} s)"
            )
            return output_dir

    os.makedirs(output_dir, exist_ok=True)
    # Written first, so that a build interrupted half-way is recognised and resumed.
    write_json(options_path, options)
    raw_dir = os.path.join(output_dir, "raw")
    paths = write_demo_videos(
        raw_dir,
        videos_per_class=counts,
        size=size,
        num_frames=num_frames,
        fps=fps,
        seed=seed,
        background=background,
        motion=motion,
    )
    # Label index i is CLASS_NAMES[i], rather than the converter's alphabetical default.
    write_label_map(output_dir, list(CLASS_NAMES))
    listing = list_sources(
        "folders",
        raw_dir,
        split=None,
        video_root=None,
        label_map_path=os.path.join(output_dir, LABEL_MAP),
    )
    result = convert(
        listing,
        output_dir,
        dataset_name="demo",
        fps=fps,
        short_side=size,
        workers=workers,
        show_progress=False,
    )
    shards = sum(result["splits"][split]["num_shards"] for split in SPLITS)
    print(
        f"demo dataset: rendered {len(paths)} videos ({len(CLASS_NAMES)} classes, "
        f"{train_per_class} train + {val_per_class} val each) into {raw_dir} and converted them "
        f"into {shards} shards in {output_dir} in {time.monotonic() - began:.1f} s"
    )
    return output_dir


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m data_prep demo`."""
    parser.add_argument("--output", required=True, help="folder for the videos and the shards")
    parser.add_argument(
        "--train-per-class", type=int, default=48, help="training videos per class (default 48)"
    )
    parser.add_argument(
        "--val-per-class", type=int, default=16, help="validation videos per class (default 16)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--background",
        default="photo",
        choices=BACKGROUNDS,
        help="behind the digit: a photo crop per video (default) or a uniform grey",
    )
    parser.add_argument(
        "--motion",
        default="constant",
        choices=MOTIONS,
        help="constant speeds (default), or accelerating ones, which give time a direction",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="conversion processes (default: CPUs)"
    )
    parser.add_argument(
        "--force", action="store_true", help="delete an earlier demo in OUTPUT and rebuild it"
    )


def run_demo(args: argparse.Namespace) -> None:
    """Runs `python -m data_prep demo` with `add_demo_arguments`' options."""
    build_demo_dataset(
        args.output,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        seed=args.seed,
        background=args.background,
        motion=args.motion,
        workers=args.workers,
        force=args.force,
    )
