"""`python -m data_prep`: turn videos (or frame folders) into training shards, and look at them.

    python -m data_prep convert --input videos/ --output data/my_videos --fps 10 --short-side 128
    python -m data_prep convert --input UCF-101/ --splits-dir ucfTrainTestlist/ \\
        --output data/ucf101 --dataset-name ucf101
    python -m data_prep convert --input ucf101_rgb_train_split_1.txt --video-root rawframes/ \\
        --class-list classInd.txt --output data/ucf101
    python -m data_prep convert --input videos/ --output data/my_videos --runner=DirectRunner \\
        --direct_num_workers=8 --direct_running_mode=multi_processing
    python -m data_prep convert --input gs://my-bucket/videos --output gs://my-bucket/shards \\
        --runner=DataflowRunner --project=my-project --region=us-central1 \\
        --temp_location=gs://my-bucket/tmp --sdk_container_image=IMAGE
    python -m data_prep inspect data/ucf101 --out reports/ucf101
    python -m data_prep verify data/ucf101

User errors (a missing file, a bad list) print one `error: ...` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from data_prep.frames import DEFAULT_SOURCE_FPS
from data_prep.inspect import InspectError
from data_prep.manifest import ConvertError, ShardError
from data_prep.sources import FORMATS, SourceError
from data_prep.storage import StorageError
from vssl_jax.data import records

# Seconds a video may take to decode before it is killed and skipped: a 10-minute 1080p h264
# video decodes, resizes and encodes in about 2 minutes on one core here.
DEFAULT_DECODE_TIMEOUT = 600.0


def _add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        required=True,
        help="a folder of videos or frame folders (ROOT/<class>/<video>, or "
        "ROOT/<split>/<class>/<video>); a list file (Kinetics CSV, JSON, 3D-ResNets JSON, "
        "VTDL, TSN/mmaction2 rawframe or video list, datalist.json, DPC CSV); the UCF101/HMDB51 "
        "video or frame folder (with --splits-dir). With --runner it may be a remote URL "
        "(gs://bucket/videos: video files, not frame folders)",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="folder for the shards and metadata (with --runner it may be a gs:// URL)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="input format (default auto: detected from the input; see README)",
    )
    parser.add_argument(
        "--split",
        help="convert only this split (inputs holding one split: the split's name, default "
        "what the list's file name says, else train)",
    )
    parser.add_argument(
        "--video-root",
        help="where the files and frame folders of a list are (default: the list's folder)",
    )
    parser.add_argument(
        "--class-list",
        help="class names in index order for lists that give class indices: classInd.txt "
        "('1 Name' lines) or one name per line (default: a classInd.txt beside the list)",
    )
    parser.add_argument("--splits-dir", help="UCF101/HMDB51 folder with the official split files")
    parser.add_argument(
        "--split-id", type=int, default=1, help="which official split, 1..3 (default 1)"
    )
    parser.add_argument(
        "--label-map", help="a label_map.json {class: index} to use instead of deriving one"
    )
    parser.add_argument(
        "--fps", type=float, help="resample to this frame rate (default: keep every frame)"
    )
    parser.add_argument(
        "--source-fps",
        type=float,
        help="frame rate of frame folders, which do not store one (default: 30 for HMDB51 and "
        f"Kinetics, i.e. --format hmdb51 or 'hmdb'/'kinetics' in the input's name; else "
        f"{DEFAULT_SOURCE_FPS:g}, UCF101's)",
    )
    parser.add_argument(
        "--short-side",
        type=int,
        default=128,
        help="resize so the short side is N px; 0 keeps the full size (default 128)",
    )
    parser.add_argument("--jpeg-quality", type=int, default=90, help="1..100 (default 90)")
    parser.add_argument(
        "--videos-per-shard", type=int, default=64, help="videos per shard file (default 64)"
    )
    parser.add_argument(
        "--frames-per-record",
        type=int,
        default=records.DEFAULT_FRAMES_PER_RECORD,
        help="JPEG frames per ArrayRecord record: a training clip reads only the records "
        f"holding its frames (default {records.DEFAULT_FRAMES_PER_RECORD})",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="decoding processes (default: CPUs)"
    )
    parser.add_argument(
        "--tfrecord",
        action="store_true",
        help="also write TFRecord SequenceExample shards (DMVR keys) under OUTPUT/tfrecord/",
    )
    parser.add_argument(
        "--dataset-name", default="videos", help="shard name prefix (default videos)"
    )
    parser.add_argument(
        "--decode-timeout",
        type=float,
        default=DEFAULT_DECODE_TIMEOUT,
        help="seconds one video may take; a video still decoding is killed, skipped and listed "
        f"in manifest.json (default {DEFAULT_DECODE_TIMEOUT:g}; 0: no limit)",
    )
    parser.add_argument(
        "--runner",
        help="convert as an Apache Beam pipeline on this runner (DirectRunner, PrismRunner, "
        "PortableRunner, FlinkRunner, SparkRunner, DataflowRunner; needs pip install -e "
        "'.[beam]', and apache-beam[gcp] for Dataflow and gs://); options this command does not "
        "know are passed to Beam as pipeline options, --workers is not used. Every worker must "
        "see local --input and --output at the same paths; remote URLs (gs://...) are read and "
        "written through Beam's FileSystems, and are what DataflowRunner needs "
        "(docs/scaling.md). Default: local worker processes",
    )


def _path_arguments(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(flag, path) of the convert options that name files or folders, where given."""
    flags = {
        "--input": args.input,
        "--output": args.output,
        "--video-root": args.video_root,
        "--class-list": args.class_list,
        "--splits-dir": args.splits_dir,
        "--label-map": args.label_map,
    }
    return [(flag, path) for flag, path in flags.items() if path]


def _run_convert(args: argparse.Namespace) -> None:
    from data_prep import storage
    from data_prep.convert import convert, local_only_message
    from data_prep.frames import default_source_fps
    from data_prep.sources import list_sources

    # Before listing anything: a wrong runner, Beam option or path fails at once.
    if args.runner:
        from data_prep.beam import check_runner

        check_runner(args.runner, args.pipeline_args, _path_arguments(args))
    else:
        for _, path in _path_arguments(args):
            if storage.is_remote(path):
                raise ConvertError(local_only_message(path))
    listing = list_sources(
        args.format,
        args.input,
        split=args.split,
        video_root=args.video_root,
        splits_dir=args.splits_dir,
        split_id=args.split_id,
        label_map_path=args.label_map,
        class_list=args.class_list,
    )
    if not listing.sources:
        example = listing.skipped[0] if listing.skipped else None
        detail = f" ({len(listing.skipped)} skipped, e.g. {example['path']}: {example['reason']})"
        raise SourceError(f"{args.input}: no usable videos{detail if example else ''}")
    options = dict(
        dataset_name=args.dataset_name,
        fps=args.fps,
        short_side=args.short_side or None,
        jpeg_quality=args.jpeg_quality,
        videos_per_shard=args.videos_per_shard,
        frames_per_record=args.frames_per_record,
        tfrecord=args.tfrecord,
        source_fps=(
            default_source_fps(args.input, listing.input_format)
            if args.source_fps is None
            else args.source_fps
        ),
        decode_timeout=args.decode_timeout or None,
    )
    if args.runner:
        from data_prep.beam import convert_with_beam

        convert_with_beam(
            listing, args.output, runner=args.runner, pipeline_args=args.pipeline_args, **options
        )
    else:
        convert(listing, args.output, workers=args.workers, **options)


def _require_local(path: str, command: str) -> None:
    from data_prep import storage

    if storage.is_remote(path):
        raise StorageError(
            f"{path}: {command} reads local shards; copy the folder here first "
            f"(e.g. gcloud storage cp -r {path} .)"
        )


def _run_inspect(args: argparse.Namespace) -> None:
    from data_prep.inspect import inspect_shards

    _require_local(args.shards_dir, "inspect")
    inspect_shards(args.shards_dir, args.out)


def _run_verify(args: argparse.Namespace) -> None:
    import json

    from data_prep.manifest import MANIFEST, verify_shards

    _require_local(args.shards_dir, "verify")
    path = os.path.join(args.shards_dir, MANIFEST)
    if not os.path.isfile(path):
        raise ShardError(f"{path}: no such file (verify checks what convert wrote)")
    if args.split:
        splits = args.split
    else:
        try:
            with open(path, encoding="utf-8") as f:
                splits = sorted(json.load(f)["splits"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ShardError(f"{path}: not a data_prep manifest ({e!r})") from e
    for split in splits:
        verify_shards(args.shards_dir, split, full=not args.quick)
    checked = "sizes" if args.quick else "sizes and SHA-256"
    print(f"{args.shards_dir}: shards of {', '.join(splits)} match {MANIFEST} ({checked})")


def _demo_module():
    """data_prep.demo when it is there and offers the sub-command's two entry points."""
    if importlib.util.find_spec("data_prep.demo") is None:
        return None
    from data_prep import demo

    if hasattr(demo, "add_demo_arguments") and hasattr(demo, "run_demo"):
        return demo
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep",
        description="Turn videos or frame folders into training shards, and look at them.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert_parser = commands.add_parser(
        "convert",
        help="decode videos into JPEG-frame shards (ArrayRecord, optionally TFRecord)",
        description="Decode videos (or read frame folders), resize, JPEG-encode the frames and "
        "write ArrayRecord shards, label_map.json, manifest.json and TFDS metadata into OUTPUT. "
        "Re-running resumes.",
    )
    _add_convert_arguments(convert_parser)
    convert_parser.set_defaults(run=_run_convert)
    inspect_parser = commands.add_parser(
        "inspect",
        help="statistics, a contact sheet and histograms of converted shards",
        description="Read the shards of SHARDS_DIR (not the original videos) and write "
        "stats.json, contact_sheet.png and histograms.png into REPORT_DIR.",
    )
    inspect_parser.add_argument("shards_dir", metavar="SHARDS_DIR", help="a convert --output")
    inspect_parser.add_argument(
        "--out", required=True, metavar="REPORT_DIR", help="folder for the report files"
    )
    inspect_parser.set_defaults(run=_run_inspect)
    verify_parser = commands.add_parser(
        "verify",
        help="check converted shards against the sizes and checksums in manifest.json",
        description="Check that every shard manifest.json lists is there, unchanged (size and "
        "SHA-256), and that no other shard of its splits is: what training checks at start-up "
        "(sizes only). Exit status 2 with a one-line error naming the first bad shard.",
    )
    verify_parser.add_argument("shards_dir", metavar="SHARDS_DIR", help="a convert --output")
    verify_parser.add_argument(
        "--split", action="append", help="check this split (repeatable; default: all)"
    )
    verify_parser.add_argument(
        "--quick", action="store_true", help="sizes only, no checksums (one stat per shard)"
    )
    verify_parser.set_defaults(run=_run_verify)
    demo = _demo_module()
    if demo is not None:
        demo_parser = commands.add_parser("demo", help="generate the built-in demo dataset")
        demo.add_demo_arguments(demo_parser)
        demo_parser.set_defaults(run=demo.run_demo)

    # Unknown options are Beam pipeline options when converting with --runner, else errors.
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "runner", None):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.pipeline_args = unknown
    try:
        args.run(args)
    except (SourceError, ConvertError, InspectError, ShardError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
