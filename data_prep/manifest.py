"""The bookkeeping files of a converted folder: label map, sidecars, manifest, TFDS metadata.

The sidecars (in `sidecars/`) are the source of truth. Each complete shard has one, listing the
videos written to it and those skipped; each converted split has a plan listing its shards and
the entries its listing skipped. manifest.json and the TFDS metadata are rebuilt from all of them
at the end of every run, so they are right after an interrupted run is resumed, and splits
converted by separate runs accumulate.

manifest.json records each shard's size and SHA-256 (`splits.<split>.checksums`, keyed by the
path relative to the folder, TFRecord twins included), so `verify_shards` can tell a shard that
was deleted, replaced or changed after the conversion, and `sha256sum` can check one by hand.

The converted folder may be remote (`gs://...`, written by the Beam pipeline through Beam's
FileSystems: storage.py); everything but `verify_shards` (which checks the local copy training
reads) works on either.
"""

from __future__ import annotations

import collections
import glob
import hashlib
import json
import os
import re
import tempfile

from data_prep import storage
from vssl_jax.data import records

LABEL_MAP = "label_map.json"
MANIFEST = "manifest.json"
SIDECAR_DIR = records.SIDECAR_DIR
# TFRecord shards live in a subfolder: TFDS's metadata writer refuses a folder whose shards have
# two file formats.
TFRECORD_DIR = "tfrecord"
PLAN_SUFFIX = ".split.json"


class ConvertError(Exception):
    """A conversion that cannot go ahead; the message is one line naming the file."""


class ShardError(ValueError):
    """Shards that no longer match their manifest.json; the message is one line naming the shard."""


def file_sha256(path: str) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks (what `sha256sum` prints)."""
    digest = hashlib.sha256()
    with storage.open_read(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str, obj) -> None:
    """Writes JSON atomically: readers see the old file or the new one, never half of one."""
    tmp = storage.temporary_name(path)
    with storage.open_write(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")
    storage.replace(tmp, path)


def _read_json(path: str):
    with storage.open_read(path, encoding="utf-8") as f:
        return json.load(f)


def write_label_map(output_dir: str, label_names: list[str]) -> None:
    write_json(os.path.join(output_dir, LABEL_MAP), {name: i for i, name in enumerate(label_names)})


def tfrecord_name(shard: str) -> str:
    """The TFRecord shard holding the same videos as ArrayRecord shard `shard`."""
    return shard.replace(f".{records.ARRAY_RECORD}-", f".{records.TFRECORD}-")


def sidecar_path(output_dir: str, shard: str) -> str:
    return os.path.join(output_dir, SIDECAR_DIR, f"{shard}.json")


def read_sidecar(output_dir: str, shard: str) -> dict | None:
    path = sidecar_path(output_dir, shard)
    return _read_json(path) if storage.isfile(path) else None


def plan_path(output_dir: str, dataset_name: str, split: str) -> str:
    return os.path.join(output_dir, SIDECAR_DIR, f"{dataset_name}-{split}{PLAN_SUFFIX}")


def read_plans(output_dir: str) -> list[dict]:
    """The split plans of every split converted into output_dir, sorted by split."""
    folder = os.path.join(output_dir, SIDECAR_DIR)
    if not storage.isdir(folder):
        return []
    plans = [
        _read_json(os.path.join(folder, n))
        for n in storage.listdir(folder)
        if n.endswith(PLAN_SUFFIX)
    ]
    return sorted(plans, key=lambda plan: plan["split"])


def check_compatible(output_dir: str, dataset_name: str, options: dict, splits: list[str]) -> None:
    """Refuses to add splits to a folder whose other splits were made with other options."""
    for plan in read_plans(output_dir):
        if plan["dataset_name"] != dataset_name:
            raise ConvertError(
                f"{output_dir}: holds dataset '{plan['dataset_name']}'; "
                f"pass --dataset-name {plan['dataset_name']} or use another --output"
            )
        if plan["split"] not in splits and plan["options"] != options:
            raise ConvertError(
                f"{output_dir}: split '{plan['split']}' was converted with {plan['options']}, "
                f"this run asks for {options}; use the same options or another --output"
            )


def _with_checksums(output_dir: str, sidecar: dict) -> dict:
    """The sidecar with its shards' SHA-256; computed and saved for sidecars written without."""
    shard = sidecar["shard"]
    missing = "sha256" not in sidecar or (sidecar["tfrecord"] and "tfrecord_sha256" not in sidecar)
    if not missing:
        return sidecar
    paths = [os.path.join(output_dir, shard)]
    if sidecar["tfrecord"]:
        paths.append(os.path.join(output_dir, TFRECORD_DIR, tfrecord_name(shard)))
    for path in paths:
        if not storage.isfile(path):
            raise ConvertError(
                f"{path}: shard of split '{sidecar['split']}' is missing; run its convert "
                "command again to redo it"
            )
    sidecar = dict(sidecar, sha256=file_sha256(paths[0]))
    if sidecar["tfrecord"]:
        sidecar["tfrecord_num_bytes"] = storage.getsize(paths[1])
        sidecar["tfrecord_sha256"] = file_sha256(paths[1])
    write_json(sidecar_path(output_dir, shard), sidecar)
    return sidecar


def _checksums(sidecars: list[dict]) -> dict[str, dict]:
    """{path relative to the folder: {"num_bytes", "sha256"}} of every shard of a split."""
    files = {}
    for sidecar in sidecars:
        files[sidecar["shard"]] = {"num_bytes": sidecar["num_bytes"], "sha256": sidecar["sha256"]}
        if sidecar["tfrecord"]:
            files[os.path.join(TFRECORD_DIR, tfrecord_name(sidecar["shard"]))] = {
                "num_bytes": sidecar["tfrecord_num_bytes"],
                "sha256": sidecar["tfrecord_sha256"],
            }
    return files


def write_manifest(
    output_dir: str, dataset_name: str, options: dict, label_names: list[str]
) -> dict:
    """Rebuilds manifest.json and the TFDS metadata from the sidecars; returns the manifest."""
    splits, skipped, split_infos = {}, [], []
    with storage.cached_listings(output_dir):
        plans = read_plans(output_dir)
        read = storage.map_io(
            output_dir, lambda shard: read_sidecar(output_dir, shard), _all_shards(plans)
        )
    for plan in plans:
        sidecars = [read[shard] for shard in plan["shards"]]
        missing = [
            shard
            for shard, sidecar in zip(plan["shards"], sidecars, strict=True)
            if sidecar is None
        ]
        if missing:
            raise ConvertError(
                f"{output_dir}: split '{plan['split']}' is incomplete ({missing[0]} is missing); "
                "run its convert command again to finish it"
            )
        sidecars = [_with_checksums(output_dir, sidecar) for sidecar in sidecars]
        videos = [video for sidecar in sidecars for video in sidecar["videos"]]
        counts = collections.Counter(video["label_text"] for video in videos)
        summary = {
            "num_videos": len(videos),
            "num_shards": len(plan["shards"]),
            "shards": plan["shards"],
            "per_class": {name: counts[name] for name in label_names},
            "num_frames": sum(video["num_frames"] for video in videos),
            "num_records": sum(_num_records(sidecar) for sidecar in sidecars),
            "checksums": _checksums(sidecars),
        }
        if sidecars and all(sidecar["tfrecord"] for sidecar in sidecars):
            summary["tfrecord_shards"] = [
                os.path.join(TFRECORD_DIR, tfrecord_name(shard)) for shard in plan["shards"]
            ]
        splits[plan["split"]] = summary
        skipped += plan["skipped"] + [entry for sidecar in sidecars for entry in sidecar["skipped"]]
        if sidecars:
            split_infos.append(_split_info(plan["split"], sidecars))
    manifest = {
        "schema_version": records.SCHEMA_VERSION,
        "dataset_name": dataset_name,
        "options": options,
        "num_classes": len(label_names),
        "splits": splits,
        "skipped": skipped,
        "num_skipped": len(skipped),
    }
    write_json(os.path.join(output_dir, MANIFEST), manifest)
    if split_infos:
        _write_tfds_metadata(output_dir, label_names, split_infos, _all_shards(plans))
    return manifest


def _all_shards(plans: list[dict]) -> list[str]:
    return [shard for plan in plans for shard in plan["shards"]]


def _num_records(sidecar: dict) -> int:
    """Records in the sidecar's shard: TFDS counts examples, which are records, not videos."""
    per_record = sidecar["options"].get("frames_per_record")
    return sum(records.records_of(video["num_frames"], per_record) for video in sidecar["videos"])


def _split_info(split: str, sidecars: list[dict]):
    import tensorflow_datasets as tfds

    return tfds.core.SplitInfo(
        name=split,
        shard_lengths=[_num_records(sidecar) for sidecar in sidecars],
        num_bytes=sum(sidecar["num_bytes"] for sidecar in sidecars),
        filename_template=None,
    )


def _write_tfds_metadata(
    output_dir: str, label_names: list[str], split_infos: list, shards: list[str]
) -> None:
    # dataset_info.json + features.json let `tfds.builder_from_directory(output_dir)` open the
    # ArrayRecord shards, without TensorFlow.
    from tensorflow_datasets import folder_dataset

    def write(data_dir: str) -> None:
        folder_dataset.write_metadata(
            data_dir=data_dir,
            features=records.features_spec(label_names),
            split_infos=split_infos,
            filename_template=records.TFDS_FILENAME_TEMPLATE,
            check_data=False,
        )

    if not storage.is_remote(output_dir):
        write(output_dir)
        return
    # TFDS writes through its own file layer, which knows no Beam scheme: the files are written
    # here, then uploaded. It reads the dataset name, splits and file format from the names of
    # the shards in the folder (not their content): empty files of the same names stand in.
    with tempfile.TemporaryDirectory(prefix="vssl-tfds-") as scratch:
        for shard in shards:
            open(os.path.join(scratch, shard), "wb").close()
        write(scratch)
        for name in sorted(set(os.listdir(scratch)) - set(shards)):
            storage.upload(os.path.join(scratch, name), os.path.join(output_dir, name))


def verify_shards(data_dir: str, split: str, *, full: bool = False) -> None:
    """Checks the split's ArrayRecord shards against manifest.json; raises ShardError if off.

    A shard listed in the manifest must exist with the size it had when it was written; a shard
    of the split on disk (one the training pipeline would read) must be listed. That costs one
    `stat` per shard. `full` also compares every shard's SHA-256, reading all of them.

    A folder without manifest.json (shards written by other tools) is not checked. A manifest
    from before sizes and checksums were recorded is checked for missing and extra shards only
    (`full` refuses it); running its convert command again records them without converting.
    """
    manifest_path = os.path.join(data_dir, MANIFEST)
    if not os.path.isfile(manifest_path):
        return
    try:
        manifest = _read_json(manifest_path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardError(f"{manifest_path}: not valid JSON ({e})") from e
    splits = manifest.get("splits") if isinstance(manifest, dict) else None
    if not isinstance(splits, dict) or split not in splits:
        found = ", ".join(sorted(splits)) if isinstance(splits, dict) else "none"
        raise ShardError(f"{manifest_path}: no split '{split}' (it lists: {found or 'none'})")
    listed = splits[split].get("shards", [])
    checksums = splits[split].get("checksums") or {}
    redo = "re-run the convert command that made it to rebuild it, or restore the file"
    for shard in listed:
        path = os.path.join(data_dir, shard)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise ShardError(f"{path}: shard is missing (listed in {MANIFEST}); {redo}") from None
        expected = checksums.get(shard)
        if expected is not None and size != expected["num_bytes"]:
            raise ShardError(
                f"{path}: shard changed since it was written ({size} bytes, {MANIFEST} says "
                f"{expected['num_bytes']}); {redo}"
            )
    # Whatever the training pipeline would read for this split (records.shard_paths).
    pattern = os.path.join(glob.escape(data_dir), f"*-{split}.{records.ARRAY_RECORD}-*-of-*")
    on_disk = sorted(
        os.path.basename(p) for p in glob.glob(pattern) if re.fullmatch(r".*-of-\d+", p)
    )
    unknown = sorted(set(on_disk) - set(listed))
    if unknown:
        raise ShardError(
            f"{os.path.join(data_dir, unknown[0])}: shard of split '{split}' is not in "
            f"{MANIFEST} (left from another conversion?); delete it or re-run the convert command"
        )
    if not full:
        return
    for shard in listed:
        path = os.path.join(data_dir, shard)
        if shard not in checksums:
            raise ShardError(
                f"{path}: {MANIFEST} records no checksum for it (written by an older "
                "data_prep); run its convert command again to add them"
            )
        if file_sha256(path) != checksums[shard]["sha256"]:
            raise ShardError(
                f"{path}: shard content changed since it was written (SHA-256 differs from "
                f"{MANIFEST}); {redo}"
            )
