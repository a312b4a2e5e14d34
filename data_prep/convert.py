"""Converting listed videos into shards: ArrayRecord (and optionally TFRecord) of JPEG frames.

Worker processes decode and JPEG-encode the videos (or read frame folders, copying their JPEGs
when they already have the requested size: frames.py); the parent writes the records in a fixed
order (split, then path) into shards of `videos_per_shard` consecutive videos, so the same input
always gives the same shards. With a decode timeout, a worker still busy with one video after
that many seconds is killed and replaced, and the video is skipped; a worker that crashes skips
its video the same way. Each shard is written under a temporary name, its sidecar (videos
written, videos skipped) is saved, then the shard is renamed into place: a re-run finds the
complete shards, leaves them alone and converts only the rest. manifest.json and the TFDS
metadata are rebuilt from the sidecars at the end (see manifest.py), with each shard's size and
SHA-256.

`convert` is the local engine. The same three parts run on Apache Beam (beam.py):
`plan_conversion` (label map, split plans, the shards still to write) on the launching machine,
`write_shard_job` for each shard on the engine's workers, `finish_conversion` (manifest) at the end.
There the videos and the output folder may also be remote (`gs://...`, through Beam's
FileSystems: storage.py): a worker decodes a local copy of each remote video, writes the shard to
local files and uploads them under temporary names before renaming them into place, so a retried
or preempted worker never leaves part of a shard under its final name. `convert` itself reads
and writes local paths only.

Every video that decodes is kept, however short: a video of fewer frames than a training clip
spans is stored as it is, and the training samplers loop its frames from frame 0
(vssl_jax/data/sampling.py). What cannot be converted (not a video, no video stream, no
decodable frame, cut short, too slow) is skipped, with its reason in manifest.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import struct
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator

import tqdm

from data_prep import frames, manifest, storage
from data_prep.manifest import ConvertError
from data_prep.sources import Listing, VideoSource, apply_label_names, load_label_map
from vssl_jax import video_io
from vssl_jax.data import records


@dataclasses.dataclass(frozen=True)
class _Task:
    source: VideoSource
    label: int
    fps: float | None
    short_side: int | None
    jpeg_quality: int
    tfrecord: bool
    frames_per_record: int
    source_fps: float = frames.DEFAULT_SOURCE_FPS  # Frame folders' frame rate.
    # A local copy of a remote source.path, decoded in its place (records keep source.path).
    local_copy: str | None = None


@dataclasses.dataclass(frozen=True)
class _Result:
    records: tuple[bytes, ...] = ()  # The video's ArrayRecord records, in frame order.
    sequence_example: bytes = b""
    num_frames: int = 0
    start_time: float = 0.0
    end_time: float = 0.0
    skip_reason: str | None = None


@dataclasses.dataclass(frozen=True)
class _Shard:
    name: str  # The ArrayRecord file name.
    split: str
    sources: tuple[VideoSource, ...]


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """One shard still to write: where, with which options, and the task of each of its videos.

    Self-contained and picklable: an engine that distributes shards ships it to the process
    that writes the shard (`write_shard_job`; data_prep/beam.py).
    """

    output_dir: str
    shard: _Shard
    tasks: tuple[_Task, ...]
    options: dict
    tfrecord: bool


@dataclasses.dataclass(frozen=True)
class Plan:
    """A conversion decided but not done yet: `plan_conversion`'s answer."""

    output_dir: str
    dataset_name: str
    options: dict
    label_names: list[str]
    splits: list[str]
    num_videos: int  # In all shards of the splits, complete ones included.
    jobs: list[ShardJob]  # The shards not complete yet, in write order.


def _convert_video(task: _Task) -> _Result:
    """Runs in a worker process: one video -> its serialized records."""
    source = task.source
    try:
        if task.local_copy is None and os.path.isdir(source.path):
            clip, _ = frames.read_frame_folder(
                source.path,
                frame_range=source.frame_range,
                source_fps=task.source_fps,
                fps=task.fps,
                short_side=task.short_side,
                quality=task.jpeg_quality,
            )
        else:
            clip = video_io.decode_to_jpegs(
                task.local_copy or source.path,
                fps=task.fps,
                short_side=task.short_side,
                start_time=source.start_time,
                end_time=source.end_time,
                quality=task.jpeg_quality,
            )
    except (video_io.VideoDecodeError, frames.FrameFolderError) as e:
        return _Result(skip_reason=e.problem)
    fields = dict(
        frames=clip.frames,
        label=task.label,
        label_text=source.label_text,
        path=source.path,
        start_time=clip.start_time,
        end_time=clip.end_time,
        fps=clip.fps,
    )
    return _Result(
        records=tuple(
            records.encode_video_records(frames_per_record=task.frames_per_record, **fields)
        ),
        sequence_example=records.encode_sequence_example(**fields) if task.tfrecord else b"",
        num_frames=len(clip.frames),
        start_time=clip.start_time,
        end_time=clip.end_time,
    )


def _source_key(source: VideoSource) -> list:
    key = [source.path, source.start_time, source.end_time]
    return key if source.frame_range is None else [*key, list(source.frame_range)]


def _plan_shards(
    sources: list[VideoSource], dataset_name: str, split: str, videos_per_shard: int
) -> list[_Shard]:
    """Contiguous chunks of the split's sources in sorted order: a re-run gives the same shards."""
    ordered = sorted(
        sources,
        key=lambda s: (
            s.path,
            s.start_time if s.start_time is not None else -math.inf,
            s.end_time if s.end_time is not None else math.inf,
            s.frame_range or (0, 0),
        ),
    )
    count = math.ceil(len(ordered) / videos_per_shard)
    return [
        _Shard(
            name=records.shard_name(dataset_name, split, records.ARRAY_RECORD, i, count),
            split=split,
            sources=tuple(ordered[i * videos_per_shard : (i + 1) * videos_per_shard]),
        )
        for i in range(count)
    ]


def _shard_files(output_dir: str, shard: str) -> tuple[str, str]:
    return (
        os.path.join(output_dir, shard),
        os.path.join(output_dir, manifest.TFRECORD_DIR, manifest.tfrecord_name(shard)),
    )


def _is_complete(output_dir: str, shard: _Shard, options: dict, tfrecord: bool) -> bool:
    """True when the shard, its sidecar and (if asked for) its TFRecord twin are all in place."""
    sidecar = manifest.read_sidecar(output_dir, shard.name)
    if sidecar is None:
        return False
    array_record_path, tfrecord_path = _shard_files(output_dir, shard.name)
    return (
        sidecar["options"] == options
        and sidecar["sources"] == [_source_key(s) for s in shard.sources]
        and storage.isfile(array_record_path)
        and storage.getsize(array_record_path) == sidecar["num_bytes"]
        and (not tfrecord or (sidecar["tfrecord"] and storage.isfile(tfrecord_path)))
    )


def _remove_stale(output_dir: str, dataset_name: str, split: str, shards: list[_Shard]) -> None:
    """Deletes this split's leftovers: temporary files and shards of an earlier, different plan.

    Also the temporary files of a killed run's manifest.json and label_map.json.
    """
    keep = {s.name for s in shards} | {manifest.tfrecord_name(s.name) for s in shards}
    keep |= {f"{name}.json" for name in keep}
    prefix = f"{dataset_name}-{split}."
    leftovers = (f"{manifest.MANIFEST}.tmp-", f"{manifest.LABEL_MAP}.tmp-")
    for folder in (manifest.SIDECAR_DIR, manifest.TFRECORD_DIR, ""):
        path = os.path.join(output_dir, folder)
        if not storage.isdir(path):
            continue
        for name in storage.listdir(path):
            stale = (
                name.startswith(prefix)
                and name not in keep
                and not name.endswith(manifest.PLAN_SUFFIX)
            )
            if stale or (folder == "" and name.startswith(leftovers)):
                storage.remove(os.path.join(path, name))


def _tfrecord_frame(data: bytes) -> bytes:
    """TFRecord framing of one record: length, masked CRC of the length, data, masked CRC.

    The `tfrecord` package's `TFRecordWriter.write` only takes feature dicts and builds its own
    proto, so records.py's SequenceExample bytes are framed here with the package's CRC.
    """
    from tfrecord import TFRecordWriter

    length = struct.pack("<Q", len(data))
    return length + TFRecordWriter.masked_crc(length) + data + TFRecordWriter.masked_crc(data)


# group_size:1 keeps every record independently readable: random access per record. No zstd:
# the JPEG frames a record holds shrink by only ~12% under it, and decompressing the record
# costs the input pipeline ~10% of a training clip's CPU time (benchmarks/README.md).
ARRAY_RECORD_OPTIONS = "group_size:1,uncompressed"


def _write_records(
    array_record_file: str,
    tfrecord_file: str | None,
    shard: _Shard,
    results: Iterator[_Result],
    progress: tqdm.tqdm | None,
) -> tuple[list[dict], list[dict]]:
    """Writes the shard's records into local files; returns its videos and skipped entries."""
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(array_record_file, ARRAY_RECORD_OPTIONS)
    tfrecord_out = open(tfrecord_file, "wb") if tfrecord_file is not None else None
    videos, skipped = [], []
    for source in shard.sources:
        result = next(results)
        if progress is not None:
            progress.update(1)
        if result.skip_reason is not None:
            skipped.append(
                {"path": source.path, "split": shard.split, "reason": result.skip_reason}
            )
            continue
        for record in result.records:
            writer.write(record)
        if tfrecord_out is not None:
            tfrecord_out.write(_tfrecord_frame(result.sequence_example))
        videos.append(
            {
                "path": source.path,
                "label_text": source.label_text,
                "start_time": result.start_time,
                "end_time": result.end_time,
                "num_frames": result.num_frames,
            }
        )
    writer.close()
    if tfrecord_out is not None:
        tfrecord_out.close()
    return videos, skipped


def _write_shard(
    output_dir: str,
    shard: _Shard,
    results: Iterator[_Result],
    options: dict,
    tfrecord: bool,
    progress: tqdm.tqdm | None = None,
) -> None:
    array_record_path, tfrecord_path = _shard_files(output_dir, shard.name)
    for path in (array_record_path, tfrecord_path):
        if storage.exists(path):
            storage.remove(path)
    array_record_tmp = storage.temporary_name(array_record_path)
    tfrecord_tmp = storage.temporary_name(tfrecord_path)
    remote = storage.is_remote(output_dir)
    with contextlib.ExitStack() as stack:
        if remote:
            # The writers take local files: written here, then uploaded under the temporary names.
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="vssl-shard-"))
            array_record_file = os.path.join(scratch, os.path.basename(array_record_path))
            tfrecord_file = os.path.join(scratch, os.path.basename(tfrecord_path))
        else:
            array_record_file, tfrecord_file = array_record_tmp, tfrecord_tmp
        videos, skipped = _write_records(
            array_record_file, tfrecord_file if tfrecord else None, shard, results, progress
        )
        sidecar = {
            "shard": shard.name,
            "split": shard.split,
            "options": options,
            "tfrecord": tfrecord,
            "sources": [_source_key(s) for s in shard.sources],
            "num_bytes": os.path.getsize(array_record_file),
            "sha256": manifest.file_sha256(array_record_file),
            "videos": videos,
            "skipped": skipped,
        }
        if tfrecord:
            sidecar["tfrecord_num_bytes"] = os.path.getsize(tfrecord_file)
            sidecar["tfrecord_sha256"] = manifest.file_sha256(tfrecord_file)
        if remote:
            storage.copy_from_local(array_record_file, array_record_tmp)
            if tfrecord:
                storage.copy_from_local(tfrecord_file, tfrecord_tmp)
    # The sidecar goes first: a shard under its final name always has one.
    manifest.write_json(manifest.sidecar_path(output_dir, shard.name), sidecar)
    if tfrecord:
        storage.replace(tfrecord_tmp, tfrecord_path)
    storage.replace(array_record_tmp, array_record_path)


_READY = "ready"


def _worker_main(connection) -> None:
    """A worker process: converts the tasks it is sent, one at a time, until it gets None."""
    try:
        connection.send(_READY)
        while (task := connection.recv()) is not None:
            try:
                result = _convert_video(task)
            except Exception as e:
                # A bug rather than a bad video: the parent stops the conversion with it.
                result = RuntimeError(
                    f"converting {task.source.path} failed: {e!r}\n{traceback.format_exc()}"
                )
            connection.send(result)
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass  # The parent is gone or stopping.


class _Worker:
    """One worker process and its end of the pipe; `task` is the index it is converting."""

    def __init__(self, context):
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child_end,), daemon=True)
        self.process.start()
        child_end.close()  # So that recv() sees the end of the pipe when the worker dies.
        self.ready = False
        self.task: int | None = None
        self.deadline: float | None = None

    def give(self, index: int, task: _Task, timeout: float | None) -> None:
        self.connection.send(task)
        self.task = index
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def stop(self, kill: bool = False) -> None:
        if not kill:
            with contextlib.suppress(OSError):
                self.connection.send(None)
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


# Maps a task to the one to convert, good while its `with` block lasts (`_fetch_copy`).
_Fetch = Callable[[_Task], contextlib.AbstractContextManager[_Task]]


def _in_workers(
    tasks: list[_Task], workers: int, timeout: float | None, context, fetch: _Fetch | None = None
) -> Iterator[_Result]:
    """The tasks' results in task order, from `workers` processes.

    A task still running `timeout` seconds after it was handed out is skipped and its process
    killed and replaced; so is a task whose process dies. At most 2 * workers results are
    computed ahead of the one awaited, so memory is bounded by the worker count. With `fetch`,
    each task is fetched (a remote video copied here) just before it is handed out, and let go
    once its result is in.
    """
    pool = [_Worker(context) for _ in range(min(workers, len(tasks)))]
    done: dict[int, _Result] = {}
    fetched: dict[int, contextlib.ExitStack] = {}
    next_task = next_result = 0
    try:
        while next_result < len(tasks):
            while next_result in done:
                if next_result in fetched:
                    fetched.pop(next_result).close()
                yield done.pop(next_result)
                next_result += 1
            if next_result == len(tasks):
                break
            for worker in pool:
                if (
                    worker.ready
                    and worker.task is None
                    and next_task < min(len(tasks), next_result + 2 * len(pool))
                ):
                    task = tasks[next_task]
                    if fetch is not None:
                        fetched[next_task] = contextlib.ExitStack()
                        task = fetched[next_task].enter_context(fetch(task))
                    worker.give(next_task, task, timeout)
                    next_task += 1
            deadlines = [w.deadline for w in pool if w.deadline is not None]
            wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready = multiprocessing.connection.wait([w.connection for w in pool], timeout=wait)
            for i, worker in enumerate(pool):
                if worker.connection in ready:
                    try:
                        message = worker.connection.recv()
                    except (EOFError, OSError):
                        worker.process.join(timeout=5)
                        if worker.task is None:
                            raise ConvertError(
                                "a conversion worker process failed to start "
                                f"({_death(worker.process.exitcode)})"
                            ) from None
                        reason = f"the decoding process died ({_death(worker.process.exitcode)})"
                        done[worker.task] = _Result(skip_reason=reason)
                        worker.stop(kill=True)
                        pool[i] = _Worker(context)
                        continue
                    if isinstance(message, str):  # _READY
                        worker.ready = True
                    elif isinstance(message, Exception):
                        raise message
                    else:
                        done[worker.task] = message
                        worker.task = worker.deadline = None
                elif worker.deadline is not None and time.monotonic() >= worker.deadline:
                    done[worker.task] = _Result(
                        skip_reason=f"decoding did not finish in {timeout:g} s "
                        "(--decode-timeout); its process was killed"
                    )
                    worker.stop(kill=True)
                    pool[i] = _Worker(context)
    finally:
        for worker in pool:
            worker.stop(kill=next_result < len(tasks))
        for stack in fetched.values():
            stack.close()


def _converted_here(tasks: list[_Task], fetch: _Fetch) -> Iterator[_Result]:
    for task in tasks:
        with fetch(task) as fetched:
            result = _convert_video(fetched)
        yield result


@contextlib.contextmanager
def _results(
    tasks: list[_Task], workers: int, timeout: float | None = None, fetch: _Fetch | None = None
) -> Iterator[Iterator[_Result]]:
    """The tasks' results in task order, computed by `workers` processes.

    In this process when there is one worker (or one task) and no timeout: a hung decode could
    not be stopped from inside the process that runs it. `fetch`: see `_in_workers`.
    """
    if timeout is None and (workers <= 1 or len(tasks) <= 1):
        yield map(_convert_video, tasks) if fetch is None else _converted_here(tasks, fetch)
        return
    if not tasks:
        yield iter(())
        return
    methods = multiprocessing.get_all_start_methods()
    # Not fork: the parent may hold threads (tqdm's monitor, PyAV's decoders) that a forked child
    # would inherit in an unusable state.
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    results = _in_workers(tasks, workers, timeout, context, fetch)
    try:
        yield results
    finally:
        results.close()  # Stops the workers, also when the caller stopped early.


def _check_options(
    fps,
    short_side,
    jpeg_quality,
    videos_per_shard,
    frames_per_record,
    output_dir,
    source_fps,
    decode_timeout,
) -> None:
    if source_fps <= 0:
        raise ConvertError(f"{output_dir}: --source-fps must be positive, got {source_fps}")
    if decode_timeout is not None and decode_timeout <= 0:
        raise ConvertError(
            f"{output_dir}: --decode-timeout must be positive (0 on the command line: none), "
            f"got {decode_timeout}"
        )
    if fps is not None and fps <= 0:
        raise ConvertError(f"{output_dir}: --fps must be positive, got {fps}")
    if short_side is not None and short_side < 1:
        raise ConvertError(f"{output_dir}: --short-side must be at least 1, got {short_side}")
    if not 1 <= jpeg_quality <= 100:
        raise ConvertError(f"{output_dir}: --jpeg-quality must be in 1..100, got {jpeg_quality}")
    if videos_per_shard < 1:
        raise ConvertError(
            f"{output_dir}: --videos-per-shard must be at least 1, got {videos_per_shard}"
        )
    if frames_per_record < 1:
        raise ConvertError(
            f"{output_dir}: --frames-per-record must be at least 1, got {frames_per_record}"
        )


def plan_conversion(
    listing: Listing,
    output_dir: str,
    *,
    dataset_name: str = "videos",
    fps: float | None = None,
    short_side: int | None = 128,
    jpeg_quality: int = 90,
    videos_per_shard: int = 64,
    frames_per_record: int = records.DEFAULT_FRAMES_PER_RECORD,
    tfrecord: bool = False,
    source_fps: float = frames.DEFAULT_SOURCE_FPS,
    decode_timeout: float | None = None,
) -> Plan:
    """Checks the options, writes the label map and split plans, lays out the shards; returns
    the shards still to write. What `convert` and the Beam pipeline (beam.py) share.
    """
    _check_options(
        fps,
        short_side,
        jpeg_quality,
        videos_per_shard,
        frames_per_record,
        output_dir,
        source_fps,
        decode_timeout,
    )
    options = {
        "fps": fps,
        "short_side": short_side,
        "jpeg_quality": jpeg_quality,
        "frames_per_record": frames_per_record,
    }
    # Frame folders' times and resampling depend on it; videos carry their own rate. (Remote
    # sources are all video files: the listing refuses remote frame folders.)
    if any(not storage.is_remote(s.path) and os.path.isdir(s.path) for s in listing.sources):
        options["source_fps"] = source_fps
    storage.makedirs(os.path.join(output_dir, manifest.SIDECAR_DIR))
    if tfrecord:
        storage.makedirs(os.path.join(output_dir, manifest.TFRECORD_DIR))

    splits = sorted({s.split for s in listing.sources} | {e["split"] for e in listing.skipped})
    manifest.check_compatible(output_dir, dataset_name, options, splits)
    label_map_path = os.path.join(output_dir, manifest.LABEL_MAP)
    if storage.exists(label_map_path):
        # Reused, never rebuilt: a split converted later must get the same class indices.
        label_names = load_label_map(label_map_path)
    else:
        label_names = list(listing.label_names)
        manifest.write_label_map(output_dir, label_names)
    listing = apply_label_names(listing, label_names)
    label_index = {name: i for i, name in enumerate(label_names)}

    shards: list[_Shard] = []
    for split in splits:
        split_shards = _plan_shards(
            [s for s in listing.sources if s.split == split], dataset_name, split, videos_per_shard
        )
        _remove_stale(output_dir, dataset_name, split, split_shards)
        plan = {
            "dataset_name": dataset_name,
            "split": split,
            "options": options,
            "shards": [s.name for s in split_shards],
            "skipped": [e for e in listing.skipped if e["split"] == split],
        }
        manifest.write_json(manifest.plan_path(output_dir, dataset_name, split), plan)
        shards += split_shards

    with storage.cached_listings(output_dir):
        # The output folder, listed once when remote; its sidecars read in threads.
        complete = storage.map_io(
            output_dir, lambda shard: _is_complete(output_dir, shard, options, tfrecord), shards
        )
    jobs = [
        ShardJob(
            output_dir=output_dir,
            shard=shard,
            tasks=tuple(
                _Task(
                    source=source,
                    label=label_index[source.label_text] if source.label_text else -1,
                    fps=fps,
                    short_side=short_side,
                    jpeg_quality=jpeg_quality,
                    tfrecord=tfrecord,
                    frames_per_record=frames_per_record,
                    source_fps=source_fps,
                )
                for source in shard.sources
            ),
            options=options,
            tfrecord=tfrecord,
        )
        for shard in shards
        if not complete[shard]
    ]
    return Plan(
        output_dir=output_dir,
        dataset_name=dataset_name,
        options=options,
        label_names=label_names,
        splits=splits,
        num_videos=sum(len(s.sources) for s in shards),
        jobs=jobs,
    )


@contextlib.contextmanager
def _fetch_copy(task: _Task) -> Iterator[_Task]:
    """The task, decoding a local copy of its video while the block lasts if that is remote."""
    if not storage.is_remote(task.source.path):
        yield task
        return
    with storage.local_copy(task.source.path) as local:
        yield dataclasses.replace(task, local_copy=local)


def write_shard_job(job: ShardJob, decode_timeout: float | None = None) -> str:
    """Converts one shard's videos one after another in this process and writes the shard;
    returns its name. With `decode_timeout`, each video decodes in a child process that is
    killed when over time (as in `convert`). For engines that distribute whole shards.

    Remote videos are copied here one at a time, each just before it is decoded (the child
    process reads the copy and needs no access to the store); a remote output folder gets the
    shard uploaded (`_write_shard`).
    """
    remote = any(storage.is_remote(task.source.path) for task in job.tasks)
    with _results(list(job.tasks), 1, decode_timeout, _fetch_copy if remote else None) as results:
        _write_shard(job.output_dir, job.shard, results, job.options, job.tfrecord)
    return job.shard.name


def finish_conversion(plan: Plan, began: float, show_progress: bool) -> dict:
    """Rebuilds manifest.json and the TFDS metadata from the sidecars; returns the manifest."""
    result = manifest.write_manifest(
        plan.output_dir, plan.dataset_name, plan.options, plan.label_names
    )
    if show_progress:
        print(summary_line(result, plan.splits, time.monotonic() - began))
    return result


def convert(
    listing: Listing,
    output_dir: str,
    *,
    dataset_name: str = "videos",
    fps: float | None = None,
    short_side: int | None = 128,
    jpeg_quality: int = 90,
    videos_per_shard: int = 64,
    frames_per_record: int = records.DEFAULT_FRAMES_PER_RECORD,
    workers: int | None = None,
    tfrecord: bool = False,
    show_progress: bool = True,
    source_fps: float = frames.DEFAULT_SOURCE_FPS,
    decode_timeout: float | None = None,
) -> dict:
    """Converts the listed videos into shards in `output_dir`; returns the manifest.

    Frames are resampled to `fps` (None: every source frame) and resized to `short_side` (None:
    full size) following `video_io.iter_frames`, then JPEG-encoded at `jpeg_quality`, and stored
    `frames_per_record` to a record (a clip reads only the records of its frames). An
    existing `output_dir/label_map.json` is kept and sources with labels outside it are skipped;
    otherwise the listing's label names are written there. Splits converted by separate calls
    accumulate in manifest.json; shards completed by an interrupted call are not redone. Videos
    that fail to decode are skipped and listed in manifest.json. `show_progress` shows a progress
    bar and prints a one-line summary.

    Frame folders are read at `source_fps` (recorded in manifest.json's options and, resampled
    or not, as each record's fps); their JPEGs are copied as they are when they already have
    `short_side` (or `short_side` is None), else re-encoded (frames.py).

    `decode_timeout` is each video's time budget in seconds: a video still decoding after it is
    killed with its process, skipped and listed in manifest.json (None: no budget). With
    `workers` > 1, or with a budget, the videos are decoded in worker processes started with
    forkserver (spawn where there is none), so a script calling this needs the usual
    `if __name__ == "__main__":` guard; memory grows with the worker count, not with the length
    of the longest video (frames are resized and encoded as they are decoded).

    Local paths only: remote ones (`gs://...`) are for the Beam pipeline (beam.py).
    """
    remote = next(
        (p for p in (output_dir, *(s.path for s in listing.sources)) if storage.is_remote(p)), None
    )
    if remote is not None:
        raise ConvertError(local_only_message(remote))
    began = time.monotonic()
    plan = plan_conversion(
        listing,
        output_dir,
        dataset_name=dataset_name,
        fps=fps,
        short_side=short_side,
        jpeg_quality=jpeg_quality,
        videos_per_shard=videos_per_shard,
        frames_per_record=frames_per_record,
        tfrecord=tfrecord,
        source_fps=source_fps,
        decode_timeout=decode_timeout,
    )
    tasks = [task for job in plan.jobs for task in job.tasks]
    with (
        _results(tasks, workers or os.cpu_count() or 1, decode_timeout) as results,
        tqdm.tqdm(
            total=plan.num_videos,
            initial=plan.num_videos - len(tasks),
            unit="video",
            disable=not show_progress,
        ) as progress,
    ):
        for job in plan.jobs:
            _write_shard(output_dir, job.shard, results, job.options, job.tfrecord, progress)
    return finish_conversion(plan, began, show_progress)


def local_only_message(path: str) -> str:
    """Why the local conversion refuses a remote path, in one line."""
    return (
        f"{path}: a remote path needs --runner (a Beam pipeline reads and writes it through "
        "Beam's FileSystems); without --runner the conversion uses local paths only "
        "(docs/scaling.md)"
    )


def summary_line(result: dict, splits: list[str], seconds: float) -> str:
    """`converted N videos (M frames) into K shards in S s; skipped J (see manifest.json)`."""
    converted = [result["splits"][s] for s in splits]
    videos = sum(s["num_videos"] for s in converted)
    frames = sum(s["num_frames"] for s in converted)
    shards = sum(s["num_shards"] for s in converted)
    skipped = sum(1 for e in result["skipped"] if e["split"] in splits)
    return (
        f"converted {videos} videos ({frames} frames) into {shards} shards in {seconds:.1f} s; "
        f"skipped {skipped} (see {manifest.MANIFEST})"
    )
