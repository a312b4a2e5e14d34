"""Paths that are local files or remote URLs (`gs://bucket/...`), for the listing and the writers.

A path with a scheme (`gs://`, `s3://`, `azfs://`, any scheme Apache Beam's `FileSystems` knows)
goes through `apache_beam.io.filesystems.FileSystems`: that is how the Beam pipeline reads videos
and writes shards when its workers share no disk (Dataflow). Any other path goes to `os` and
`open` exactly as before, so the local conversion does what it always did, at the same speed.

Object stores have no folders: a folder is the common prefix of the objects under it, and a
folder with nothing in it does not exist. Asking a store whether each of 650k videos exists would
take hours, so inside `cached_listings()` every question about a remote folder is answered from
one recursive listing of it (taken the first time something under it is asked about, and kept
for the rest of the block); the listing code runs inside one. Outside it each question is one
request, for the output folder, which changes while a conversion runs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import io
import os
import posixpath
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Beam's own test for a URL (FileSystems.URI_SCHEMA_PATTERN).
_SCHEME = re.compile(r"([A-Za-z][-A-Za-z0-9+.]*)://")
# Beam's FileSystems.match reads these as wildcards and has no way to quote them.
_GLOB = re.compile(r"[*?\[]")
# Beam's GCP, AWS and Azure extras bring these schemes.
_EXTRAS = {"gs": "gcp", "s3": "aws", "azfs": "azure"}


class StorageError(Exception):
    """A remote path that cannot be used; the message is one line naming it."""


def is_remote(path: str) -> bool:
    """True for a URL with a scheme (`gs://...`), which Beam's FileSystems serves."""
    # The substring test first: local paths, the common case, skip the regex.
    return "://" in path and _SCHEME.match(path) is not None


def _filesystems(path: str):
    """Beam's FileSystems, once it is known to serve `path`'s scheme."""
    try:
        from apache_beam.io.filesystems import FileSystems
    except ImportError:
        raise StorageError(
            f"{path}: remote paths are read and written with Apache Beam's FileSystems: "
            "pip install -e '.[beam]'"
        ) from None
    try:
        FileSystems.get_filesystem(path)
    except ValueError:
        scheme = _SCHEME.match(path).group(1)
        extra = _EXTRAS.get(scheme)
        hint = f"pip install 'apache-beam[{extra}]'" if extra else "no Beam FileSystem has it"
        raise StorageError(f"{path}: Beam cannot read {scheme}:// paths here ({hint})") from None
    return FileSystems


def _uncompressed():
    # Beam guesses a compression from the extension by default; every file here is taken as is.
    from apache_beam.io.filesystem import CompressionTypes

    return CompressionTypes.UNCOMPRESSED


def _not_found(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)


def _check_listable(folder: str) -> None:
    if _GLOB.search(folder):
        raise StorageError(
            f"{folder}: a remote folder whose name holds *, ? or [ cannot be listed "
            "(Beam's FileSystems.match takes them as wildcards)"
        )


class _Tree:
    """One recursive listing of a remote folder: its objects' sizes and the folders they imply."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")
        _check_listable(self.root)
        self.files: dict[str, int] = {}
        self.folders: dict[str, set[str]] = {}  # Folder -> the names of what is in it.
        file_systems = _filesystems(self.root)
        try:
            [result] = file_systems.match([f"{self.root}/**"])
        except OSError as e:  # Beam's BeamIOError: no access, a network failure...
            raise StorageError(f"{self.root}: cannot list it ({e})") from e
        for metadata in result.metadata_list:
            if metadata.path.endswith("/"):
                # A folder placeholder object (what a console's "create folder" makes).
                self._add(metadata.path.rstrip("/"), folder=True)
            else:
                self.files[metadata.path] = metadata.size_in_bytes
                self._add(metadata.path, folder=False)

    def _add(self, path: str, folder: bool) -> None:
        if folder:
            self.folders.setdefault(path, set())
        while path != self.root and path.startswith(self.root + "/"):
            parent, _, name = path.rpartition("/")
            names = self.folders.setdefault(parent, set())
            if name in names:
                break  # Its ancestors are in already.
            names.add(name)
            path = parent

    def covers(self, folder: str) -> bool:
        return folder == self.root or folder.startswith(self.root + "/")

    def listdir(self, path: str) -> list[str]:
        if path not in self.folders:
            raise _not_found(path)
        return list(self.folders[path])

    def walk(self, top: str) -> Iterator[tuple[str, list[str], list[str]]]:
        """os.walk's top-down walk: a caller may prune the folder names it is given."""
        if top not in self.folders:
            return
        names = sorted(self.folders[top])
        dirs = [n for n in names if f"{top}/{n}" in self.folders]
        files = [n for n in names if f"{top}/{n}" in self.files]
        yield top, dirs, files
        for name in dirs:
            yield from self.walk(f"{top}/{name}")


_lock = threading.Lock()
_trees: list[_Tree] | None = None  # The listings kept by the open cached_listings() block.


@contextlib.contextmanager
def cached_listings(*folders: str) -> Iterator[None]:
    """Within the block, remote folders are listed once and answered from that listing.

    For code that asks many questions about folders that do not change meanwhile (the inputs
    while they are listed; the output between two steps of the launcher). The remote `folders`
    are listed on entry (before threads ask about them); others when first asked about. No
    effect on local paths.
    """
    global _trees
    with _lock:
        outer, _trees = _trees, (_trees if _trees is not None else [])
    try:
        for folder in folders:
            if is_remote(folder):
                _cached_tree(folder.rstrip("/"))
        yield
    finally:
        with _lock:
            _trees = outer


def _cached_tree(folder: str) -> _Tree | None:
    """Inside cached_listings(): a listing of `folder` or of a folder above it, taken now if
    there is none yet. Outside: None.

    Questions about a folder pass the folder, about a file its parent: a listing of X holds what
    is under X, not whether X itself is a file.
    """
    with _lock:
        if _trees is None:
            return None
        for tree in _trees:
            if tree.covers(folder):
                return tree
    tree = _Tree(folder)
    with _lock:
        if _trees is not None:
            _trees.append(tree)
    return tree


def _remote_parent(path: str) -> str:
    return posixpath.dirname(path.rstrip("/"))


# --- questions (os.path.isfile, isdir, exists, getsize, os.listdir, os.walk) ---


def isfile(path: str) -> bool:
    if not is_remote(path):
        return os.path.isfile(path)
    path = path.rstrip("/")
    tree = _cached_tree(_remote_parent(path))
    if tree is not None:
        return path in tree.files
    return _filesystems(path).exists(path)


def isdir(path: str) -> bool:
    if not is_remote(path):
        return os.path.isdir(path)
    path = path.rstrip("/")
    tree = _cached_tree(path)
    if tree is not None:
        return path in tree.folders
    _check_listable(path)
    [result] = _filesystems(path).match([f"{path}/**"], limits=[1])
    return bool(result.metadata_list)


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    return isfile(path) or isdir(path)


def getsize(path: str) -> int:
    if not is_remote(path):
        return os.path.getsize(path)
    tree = _cached_tree(_remote_parent(path))
    if tree is not None:
        if path not in tree.files:
            raise _not_found(path)
        return tree.files[path]
    file_systems = _filesystems(path)
    if not file_systems.exists(path):
        raise _not_found(path)
    return file_systems.get_filesystem(path).size(path)


def listdir(path: str) -> list[str]:
    if not is_remote(path):
        return os.listdir(path)
    path = path.rstrip("/")
    tree = _cached_tree(path) or _Tree(path)
    return tree.listdir(path)


def walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    if not is_remote(top):
        return os.walk(top)
    top = top.rstrip("/")
    tree = _cached_tree(top) or _Tree(top)
    return tree.walk(top)


def parent(path: str) -> str:
    """The folder holding `path` (a list file's folder: the default root of what it names)."""
    if not is_remote(path):
        return os.path.dirname(os.path.abspath(path))
    return _remote_parent(path)


# --- reading and writing ---


def open_read(path: str, mode: str = "r", **text_options):
    """`open(path, mode, **text_options)` for "r" or "rb"; remote files are streamed."""
    if not is_remote(path):
        return open(path, mode, **text_options)
    raw = _filesystems(path).open(path, compression_type=_uncompressed())
    return raw if "b" in mode else io.TextIOWrapper(raw, **text_options)


def open_write(path: str, mode: str = "w", **text_options):
    """`open(path, mode, **text_options)` for "w" or "wb". A remote object appears whole when
    the file is closed, or not at all."""
    if not is_remote(path):
        return open(path, mode, **text_options)
    raw = _filesystems(path).create(path, compression_type=_uncompressed())
    return raw if "b" in mode else io.TextIOWrapper(raw, **text_options)


def temporary_name(path: str) -> str:
    """Where to write `path` before renaming it into place.

    Local: this process's id, as ever. Remote: a random token, since a Beam runner may run two
    attempts of the same shard on two machines whose processes can have the same id.
    """
    if not is_remote(path):
        return f"{path}.tmp-{os.getpid()}"
    return f"{path}.tmp-{secrets.token_hex(8)}"


def replace(source: str, destination: str) -> None:
    """os.replace; remotely Beam's rename (on GCS a server-side copy, then a delete): the
    destination holds the whole old object or the whole new one, never part of one."""
    if not is_remote(destination):
        os.replace(source, destination)
        return
    _filesystems(destination).rename([source], [destination])


def remove(path: str) -> None:
    if not is_remote(path):
        os.remove(path)
        return
    _filesystems(path).delete([path])


def makedirs(path: str) -> None:
    """os.makedirs(exist_ok=True). Object stores need no folders (Beam's mkdirs does nothing
    there); a store that has them gets the folder."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)
        return
    file_systems = _filesystems(path)
    if not file_systems.exists(path):
        file_systems.mkdirs(path)


def copy_from_local(local_path: str, path: str) -> None:
    """Copies a local file to `path` (local or remote)."""
    with open(local_path, "rb") as source, open_write(path, "wb") as destination:
        shutil.copyfileobj(source, destination, 1 << 20)


def upload(local_path: str, path: str) -> None:
    """Copies a local file to `path` under a temporary name, then renames it into place."""
    temporary = temporary_name(path)
    copy_from_local(local_path, temporary)
    replace(temporary, path)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local file with the content of remote `path`, deleted when the block ends.

    Videos are decoded from a copy rather than streamed: PyAV seeks about 12 times in an mp4
    (more when trimming), and each seek on an object store is another ranged request, while a
    clip is a few MB; the decoding child process (--decode-timeout) also needs a plain file.
    The copy keeps the extension, which FFmpeg's format probing may use.
    """
    handle, local = tempfile.mkstemp(prefix="vssl-video-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(handle, "wb") as destination, open_read(path, "rb") as source:
            shutil.copyfileobj(source, destination, 1 << 20)
        yield local
    finally:
        os.remove(local)


# Requests in flight at once when reading many small remote files (sidecars): each one waits on
# the network, not on a core.
_IO_THREADS = 32


def map_io(folder: str, function: Callable[[T], R], items: Iterable[T]) -> dict[T, R]:
    """`{item: function(item)}` for functions that read under `folder`: in order for a local
    folder, in threads for a remote one."""
    items = list(items)
    if not is_remote(folder):
        return {item: function(item) for item in items}
    with concurrent.futures.ThreadPoolExecutor(_IO_THREADS) as pool:
        return dict(zip(items, pool.map(function, items), strict=True))
