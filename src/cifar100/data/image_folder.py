"""Image-folder datasets: `train/<class>/*` and `test/<class>/*`, as a folder or a .tar.gz
(.tgz) of one; the two split folders may also sit inside one top-level folder. (Plain .tar is
not accepted: tarfile reads a cut-off tar as a complete shorter one, and only gzip's checksum
tells a cut-off archive from a whole one.)

- Class names are the class folder names, sorted; train and test must have the same ones.
- Any format Pillow reads; each image goes through `images.decode_image` and
  `images.to_model_input` (centre crop to a square, resize to 32x32 only if it is not 32x32).
- Files and folders whose names start with "." (.DS_Store, macOS "._" files), `__MACOSX/`,
  Thumbs.db and desktop.ini are skipped silently: operating systems put them there.
- Everything else under train/ and test/ must be an image inside a class folder. A file that
  is not (a text file, a zero-byte or truncated image, a loose file next to the class folders)
  is an ERROR, not a warning: skipping it would quietly change the class counts a model is
  trained and evaluated on. The error lists every such file at once, so one pass fixes them.
- An empty class folder, a missing train/ or test/, or classes that differ between the two are
  errors (DatasetError) too.

Decoding 60,000 small JPEGs takes ~15 s, so the decoded arrays are cached as an .npz under
`<data dir>/image-folders/`, keyed by the source's path and, for an archive, its size and
modification time (for a folder: every file's path, size and modification time). The second
load reads the .npz (well under a second). The cache is written atomically; a damaged or
stale cache file is rebuilt.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from cifar100.data.types import Dataset, Split
from cifar100.errors import DatasetError, ImageError
from cifar100.data.images import decode_image, to_model_input

SPLITS = ("train", "test")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
IGNORED_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}
CACHE_FOLDER = "image-folders"
CACHE_VERSION = 1
IMAGE_SIZE = 32
MAX_LISTED_PROBLEMS = 10
# An archive's members are held in memory until decoded: bound them, so a small .tar.gz that
# expands to many gigabytes (a gzip bomb) is refused from its tar headers, before it is read.
MAX_MEMBER_BYTES = 256 << 20
MAX_ARCHIVE_BYTES = 4 << 30


@dataclass
class _File:
    relpath: str  # as shown to the user: "train/cat/0001.jpg"
    split: str
    class_name: str
    read: Callable[[], bytes]


def is_image_folder_source(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() or (path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES))


def dataset_name(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_image_folder(source: str | Path, cache_dir: str | Path, *, quiet: bool = False) -> Dataset:
    """Read an image-folder dataset (a folder or an archive of one), through the .npz cache
    kept in `cache_dir`."""
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise DatasetError(f"{path}: no such folder or archive")
    if not is_image_folder_source(path):
        raise DatasetError(
            f"{path} is neither a folder nor a .tar.gz/.tgz archive of one "
            f"(an image-folder dataset is train/<class>/* and test/<class>/*)"
        )
    key = _source_key(path)
    cache_file = _cache_path(path, Path(cache_dir).expanduser())
    dataset = _read_cache(cache_file, key, path)
    if dataset is not None:
        return dataset
    files, class_folders = _list_archive(path) if path.is_file() else _list_folder(path)
    classes = _check_layout(files, class_folders, path)
    dataset = _decode(files, classes, path, quiet=quiet)
    _write_cache(cache_file, key, dataset)
    return dataset


# --- listing -------------------------------------------------------------------------------


def _skipped(parts: Iterable[str]) -> bool:
    return any(part.startswith(".") or part in IGNORED_NAMES for part in parts)


def _list_folder(root: Path) -> tuple[list[_File], set[str]]:
    """All files (with a reader each) and all folders, as paths relative to `root`."""
    files: list[tuple[str, Path]] = []
    folders: set[str] = set()
    for folder, subfolders, names in os.walk(root):
        rel = Path(folder).relative_to(root)
        subfolders[:] = [s for s in subfolders if not _skipped([s])]
        for s in subfolders:
            folders.add((rel / s).as_posix())
        for name in names:
            if not _skipped([name]):
                files.append(((rel / name).as_posix(), Path(folder) / name))
    return _place([(rel, p.read_bytes) for rel, p in files], folders, root)


def _list_archive(archive: Path) -> tuple[list[_File], set[str]]:
    contents: list[tuple[str, Callable[[], bytes]]] = []
    folders: set[str] = set()
    total = 0
    with open(archive, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            raise DatasetError(f"{archive} is not a gzip-compressed tar archive (.tar.gz)")
    try:
        with gzip.open(archive, "rb") as raw:
            # Streaming mode reads the archive once, front to back; members are never written
            # to disk, so no path inside the archive can point outside it.
            with tarfile.open(fileobj=raw, mode="r|") as tar:
                for member in tar:
                    parts = PurePosixPath(member.name).parts
                    parts = tuple(part for part in parts if part not in (".", "/"))
                    if not parts or _skipped(parts):
                        continue  # the archive's own "." entry, or a system file
                    name = "/".join(parts)
                    if member.isdir():
                        folders.add(name)
                    elif member.isfile():
                        total += member.size
                        if member.size > MAX_MEMBER_BYTES or total > MAX_ARCHIVE_BYTES:
                            raise DatasetError(
                                f"{archive}: {name} ({member.size:,} bytes) takes the archive past the "
                                f"limits of {MAX_MEMBER_BYTES >> 20} MiB per file and {MAX_ARCHIVE_BYTES >> 30} GiB "
                                f"in all; extract it and pass the folder instead"
                            )
                        data = tar.extractfile(member).read()
                        contents.append((name, lambda data=data: data))
            # tarfile takes a cut-off header for the end of the archive and stops quietly, which
            # would lose images; gzip's length and CRC check catches any cut, but only when the
            # stream is read to its end, so read the rest (the padding after the end marker).
            while raw.read(1 << 20):
                pass
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise DatasetError(f"{archive} could not be read as a tar archive ({exc})") from None
    return _place(contents, folders, archive)


def _place(
    contents: list[tuple[str, Callable[[], bytes]]], folders: set[str], source: Path
) -> tuple[list[_File], set[str]]:
    """Find where train/ and test/ are (at the top, or inside one top-level folder) and give
    each file its split and class. Returns the files and the class folders ("train/cat")."""
    every_path = [rel for rel, _ in contents] + sorted(folders)
    prefix = _split_root(every_path, source)
    files: list[_File] = []
    loose: list[str] = []
    for rel, read in contents:
        if not rel.startswith(prefix):
            continue
        parts = rel[len(prefix) :].split("/")
        if parts[0] not in SPLITS:
            continue  # a README or LICENSE beside train/ and test/
        if len(parts) == 2:
            loose.append(rel)
            continue
        files.append(_File(rel, parts[0], parts[1], read))
    class_folders = set()
    for folder in folders:
        if folder.startswith(prefix):
            parts = folder[len(prefix) :].split("/")
            if len(parts) == 2 and parts[0] in SPLITS:
                class_folders.add("/".join(parts))
    if loose:
        raise DatasetError(
            f"{source}: {len(loose)} file(s) directly in train/ or test/, outside any class folder "
            f"(move each into its class folder): {_listing(loose)}"
        )
    return files, class_folders


def _split_root(paths: list[str], source: Path) -> str:
    if any(p.split("/")[0] in SPLITS for p in paths):
        return ""
    tops = {p.split("/")[0] for p in paths}
    if len(tops) == 1:
        top = tops.pop()
        if any(len(p.split("/")) > 1 and p.split("/")[1] in SPLITS for p in paths):
            return f"{top}/"
    raise DatasetError(
        f"{source}: no train/ or test/ folder found; an image-folder dataset is "
        f"train/<class>/<image> and test/<class>/<image> (at the top, or inside one folder)"
    )


def _check_layout(files: list[_File], class_folders: set[str], source: Path) -> list[str]:
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    for entry in class_folders:
        split, class_name = entry.split("/")
        counts[split].setdefault(class_name, 0)
    for f in files:
        counts[f.split][f.class_name] = counts[f.split].get(f.class_name, 0) + 1
    for split in SPLITS:
        if not counts[split]:
            raise DatasetError(
                f"{source}: no {split}/ split (or it has no class folders); an image-folder dataset "
                f"needs both train/<class>/* and test/<class>/*"
            )
    empty = [f"{split}/{name}" for split in SPLITS for name, n in sorted(counts[split].items()) if n == 0]
    if empty:
        raise DatasetError(f"{source}: empty class folder(s), every class needs images: {_listing(empty)}")
    train_only = sorted(set(counts["train"]) - set(counts["test"]))
    test_only = sorted(set(counts["test"]) - set(counts["train"]))
    if train_only or test_only:
        raise DatasetError(
            f"{source}: train/ and test/ must have the same class folders; only in train: "
            f"{_listing(train_only) or 'none'}; only in test: {_listing(test_only) or 'none'}"
        )
    return sorted(counts["train"])


# --- decoding ------------------------------------------------------------------------------


def _decode(files: list[_File], classes: list[str], source: Path, *, quiet: bool) -> Dataset:
    from tqdm import tqdm

    index = {name: i for i, name in enumerate(classes)}
    # A fixed order (class, then file name), whatever order the archive or the disk lists.
    files = sorted(files, key=lambda f: (f.split, index[f.class_name], f.relpath))
    images = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    problems: list[str] = []
    bar = tqdm(files, desc=f"decoding {source.name}", unit="img", file=sys.stderr,
               disable=quiet or not sys.stderr.isatty(), leave=False)
    for i, f in enumerate(bar):
        try:
            images[i] = to_model_input(decode_image(f.read(), label=f.relpath), IMAGE_SIZE)
        except ImageError as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"{f.relpath}: could not be read ({exc})")
    if problems:
        raise DatasetError(
            f"{source}: {len(problems)} file(s) in class folders are not readable images "
            f"(delete or replace them): {_listing(problems)}"
        )
    labels = np.array([index[f.class_name] for f in files], dtype=np.int64)
    in_train = np.array([f.split == "train" for f in files], dtype=bool)
    return Dataset(
        name=dataset_name(source),
        classes=classes,
        train=Split(images[in_train], labels[in_train]),
        test=Split(images[~in_train], labels[~in_train]),
        spec=str(source),
    )


def _listing(items: list[str]) -> str:
    shown = "; ".join(items[:MAX_LISTED_PROBLEMS])
    more = len(items) - MAX_LISTED_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")


# --- cache ---------------------------------------------------------------------------------


def _source_key(path: Path) -> str:
    """Changes whenever the source may have changed: size and mtime of the archive, or of
    every file in the folder."""
    digest = hashlib.sha1(f"v{CACHE_VERSION}|{path}".encode(), usedforsecurity=False)
    if path.is_file():
        st = path.stat()
        digest.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        for folder, _, names in sorted(os.walk(path)):
            for name in sorted(names):
                st = os.stat(os.path.join(folder, name))
                digest.update(f"|{os.path.relpath(os.path.join(folder, name), path)}|{st.st_size}|{st.st_mtime_ns}".encode())
            digest.update(f"|dir:{os.path.relpath(folder, path)}".encode())
    return digest.hexdigest()


def _cache_path(path: Path, cache_dir: Path) -> Path:
    # One cache file per source path (a changed source replaces it rather than adding one).
    tag = hashlib.sha1(str(path).encode(), usedforsecurity=False).hexdigest()[:12]
    return cache_dir / CACHE_FOLDER / f"{dataset_name(path)}-{tag}.npz"


def _read_cache(cache_file: Path, key: str, source: Path) -> Dataset | None:
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            classes = [str(c) for c in z["classes"]]
            train = Split(z["train_images"], z["train_labels"])
            test = Split(z["test_images"], z["test_labels"])
    except Exception as exc:  # a damaged .npz reports itself in many ways (BadZipFile, KeyError, ...)
        warnings.warn(f"ignoring the damaged cache file {cache_file} ({exc}); decoding {source} again", stacklevel=3)
        return None
    return Dataset(name=dataset_name(source), classes=classes, train=train, test=test, spec=str(source))


def _write_cache(cache_file: Path, key: str, dataset: Dataset) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{cache_file.name}.", suffix=".tmp", dir=cache_file.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                key=np.array(key),
                classes=np.array(dataset.classes),
                train_images=dataset.train.images,
                train_labels=dataset.train.labels,
                test_images=dataset.test.images,
                test_labels=dataset.test.labels,
            )
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared data dir should stay readable
        os.replace(tmp, cache_file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
