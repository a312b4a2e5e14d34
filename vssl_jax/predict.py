"""Classify a raw video with a trained run:

    python -m vssl_jax.predict --workdir W --video clip.mp4 [--start-time S]
        [--end-time E | --duration D] [--top-k 5] [--json]

The video is decoded as data_prep decoded the training data (the fps and short side recorded in
the dataset's manifest.json), cut into the run's test views (`num_test_clips` x
`num_test_crops`) and classified by the latest checkpoint in W; view logits are averaged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m vssl_jax.predict", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workdir", required=True, help="a training run's workdir")
    parser.add_argument("--video", required=True, help="the video file to classify")
    parser.add_argument("--start-time", type=float, help="seconds into the video")
    end = parser.add_mutually_exclusive_group()
    end.add_argument("--end-time", type=float, help="seconds into the video")
    end.add_argument("--duration", type=float, help="seconds after --start-time")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.start_time is not None and args.end_time is None and args.duration is None:
        parser.error("--start-time needs --end-time or --duration")
    if args.duration is not None and args.start_time is None:
        parser.error("--duration needs --start-time")
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    return args


def load_run_config(workdir: str):
    """The resolved config a run saved in `workdir/config.json`."""
    import ml_collections

    path = os.path.join(workdir, "config.json")
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; is {workdir} a vssl_jax workdir?") from None


def _decoding_options(data_dir: str) -> dict:
    with open(os.path.join(data_dir, "manifest.json")) as f:
        options = json.load(f)["options"]
    return {"fps": options["fps"], "short_side": options["short_side"]}


def _time_range(args: argparse.Namespace, video: str) -> tuple[float | None, float | None]:
    from vssl_jax import video_io

    duration = video_io.probe(video).duration
    start = args.start_time
    end = args.end_time if args.duration is None else start + args.duration
    if start is None:
        return None, None
    if start < 0 or end <= start:
        raise ValueError(f"{video}: empty or negative time range {start:g}-{end:g} s")
    if start >= duration or end > duration + 1e-3:
        raise ValueError(
            f"{video}: time range {start:g}-{end:g} s is beyond the video's {duration:.3f} s"
        )
    return start, end


def predict(args: argparse.Namespace) -> dict:
    import jax

    from vssl_jax import evaluate, video_io
    from vssl_jax.data import pipeline

    config = load_run_config(args.workdir)
    start, end = _time_range(args, args.video)
    state, spec, _, data_dir, label_names = evaluate.restore_latest(
        config, args.workdir, build_data=False
    )
    frames = np.stack(
        [
            rgb
            for _, rgb in video_io.iter_frames(
                args.video, start_time=start, end_time=end, **_decoding_options(data_dir)
            )
        ]
    )  # [num_frames, height, width, 3]
    views = pipeline.test_views(
        frames, len(frames), pipeline.clip_spec(config.data), args.video
    )  # [views, T, crop, crop, 3]
    batch = {
        "video": views[None],
        "label": np.zeros(1, np.int32),
        "mask": np.ones(1, np.float32),
        "index": np.zeros(1, np.int32),
    }
    step = jax.jit(lambda s, b: evaluate.eval_step(s, b, spec=spec, config=config))
    logits = np.asarray(step(state, batch)["logits"][0], np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    top = np.argsort(-probs, kind="stable")[: args.top_k]
    return {
        "video": args.video,
        "top_k": [{"label": label_names[i], "index": int(i), "prob": float(probs[i])} for i in top],
    }


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    from absl import flags

    from vssl_jax import video_io

    flags.FLAGS.mark_as_parsed()  # grain reads absl flags; this command has none of its own.
    try:
        result = predict(args)
    except (video_io.VideoDecodeError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['video']}:")
    for entry in result["top_k"]:
        print(f"  {entry['prob']:7.2%}  {entry['label']}")


if __name__ == "__main__":
    main()
