"""Image-folder datasets: the folders of images people have, as a folder or as a .tar.gz (.tgz),
.tar.xz (.txz) or .zip of one. Three layouts, told apart by the folder names:

- `<class>/<image>`: one folder per class (what Keras's `image_dataset_from_directory` reads).
  The test split is carved out of it after decoding: stratified (the same share of every
  class, and every class keeps at least one training and one test image), seeded
  (`split_seed`), `test_size` images (a fraction below 1, default `DEFAULT_TEST_SIZE`, or a
  whole count).
- `train/<class>/<image>` and `test/<class>/<image>`: the splits as given.
- `train/`, `val/` (or `validation/`) and `test/`: the validation split is used as given,
  instead of being carved out of train/.

A folder named train/, test/, val/ or validation/ (any case) at the top makes it a split layout;
otherwise the top-level folders are the classes. The whole layout may sit inside one top-level
folder (`pets/cat/...`, `pets/train/cat/...`), as an archive of a folder has it. (Plain .tar is
not accepted: tarfile reads a cut-off tar as a complete shorter one; gzip's and xz's checksums
and zip's CRCs tell a cut-off archive from a whole one.)

- Class names are the class folder names, sorted; every split must have the same ones, and a
  classifier needs at least 2. Images in subfolders of a class folder belong to that class.
- Any format Pillow reads; each image goes through `images.decode_image` and
  `images.to_model_input`, as `predict` prepares a photo: one that is not 32x32 is centre-cropped
  to a square (or squashed whole, `center_crop=False`) and downscaled to 32x32.
- Files and folders whose names start with "." (.DS_Store, macOS "._" files), `__MACOSX/`,
  Thumbs.db and desktop.ini are skipped silently: operating systems put them there. So are
  files at the top of the dataset that are not images (a README or LICENSE.txt beside the class
  folders of a `<class>/<image>` folder, or beside train/ and test/), and folders beside train/
  and test/ with everything in them.
- Everything else must be an image inside a class folder. A file that is not (a text file, a
  zero-byte or truncated image in a class folder; an image at the top of the dataset; any file
  directly in train/, val/ or test/, a README too, where only class folders belong) is an
  ERROR, not a warning: skipping it would quietly change the class counts a model is trained
  and evaluated on. The error lists every such file at once, so one pass fixes them.
- So is an archive member in a class folder that is not a regular file: a hard link (GNU tar
  stores a file it has already archived as a link to the first copy), a symbolic link, a
  device. Archive with `tar --hard-dereference --dereference`, or extract it and pass the folder.
- An empty class folder, a single class, a class too small to split (one image), train/
  without test/, two folders for one split (val/ and validation/, or Train/ and train/), or
  classes that differ between splits are errors (DatasetError) too.

Decoding 60,000 small JPEGs takes ~15 s, so the decoded arrays are cached as an .npz under
`<data dir>/image-folders/`, keyed by the source's path, `center_crop` and, for an archive, its
size and modification time (for a folder: every file's path, size and modification time). The
second load reads the .npz (well under a second). The cache holds every image with the split
its folder gave it (train, val, test, or none for `<class>/<image>`); the test split is carved
after reading it, so a new `test_size` or `split_seed` costs no decoding. The cache is written
atomically; a damaged or stale cache file is rebuilt.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import sys
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from cifar100.data.images import decode_image, image_suffixes, to_model_input
from cifar100.data.types import (
    DEFAULT_CENTER_CROP,
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_SIZE,
    Dataset,
    Split,
    check_size,
    split_count,
    stratified_split,
)
from cifar100.errors import DatasetError, ImageError

# The splits an image can have, in the order the cache stores them; "unsplit" is a
# <class>/<image> folder's, whose test split is carved after decoding.
SPLITS = ("train", "val", "test", "unsplit")
# Split folder names (compared lower-cased) and the split each one is.
SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
# Archive name endings and their kind; plain .tar is named so that it is refused with the reason.
ARCHIVES = {".tar.gz": "gz", ".tgz": "gz", ".tar.xz": "xz", ".txz": "xz", ".zip": "zip"}
ARCHIVE_SUFFIXES = tuple(ARCHIVES)
ARCHIVE_NAMES = ", ".join(ARCHIVE_SUFFIXES[:-1]) + f" or {ARCHIVE_SUFFIXES[-1]}"  # for messages and help
PLAIN_TAR = ".tar"
IGNORED_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}
CACHE_FOLDER = "image-folders"
CACHE_VERSION = 2
IMAGE_SIZE = 32
MAX_LISTED_PROBLEMS = 10
# An archive's members are held in memory until decoded: bound them, so a small archive that
# expands to many gigabytes (a gzip or zip bomb) is refused from its headers, before it is read.
MAX_MEMBER_BYTES = 256 << 20
MAX_ARCHIVE_BYTES = 4 << 30
# The layouts in words, for messages and help (the command line's too).
SPLIT_LAYOUT = "train/<class>/<image> and test/<class>/<image> (with val/<class>/<image> optionally)"
LAYOUTS = f"<class>/<image>, or {SPLIT_LAYOUT}, at the top or inside one folder"


@dataclass
class _NotAFile:
    """An archive member that is not a regular file (a link, a device), in place of its reader:
    what it is, for the error that names it if it sits in a class folder."""

    what: str  # "a hard link to pets/cat/1.jpg"

    def __call__(self) -> bytes:
        raise OSError(f"not a regular file but {self.what}")


@dataclass
class _File:
    relpath: str  # as shown to the user: "train/cat/0001.jpg"
    split: str  # one of SPLITS
    class_name: str
    read: Callable[[], bytes]


@dataclass
class _Placed:
    """The files of a source, placed in the layout its folder names say."""

    files: list[_File]
    counts: dict[str, dict[str, int]]  # split -> class -> images (0: an empty class folder)
    folder_names: dict[str, str]  # split -> the folder it came from, as named ("validation")
    prefix: str  # "" or the top-level folder the layout sits in ("pets/")


@dataclass
class _Decoded:
    """Every image of a source, decoded, ordered by split (as in SPLITS), class, then file name:
    what the cache holds."""

    classes: list[str]
    images: np.ndarray  # uint8 (N, 32, 32, 3)
    labels: np.ndarray  # int64 (N,)
    splits: np.ndarray  # int8 (N,), an index into SPLITS, non-decreasing

    def part(self, split: str) -> Split:
        # A view, not a copy: the images of a split are contiguous.
        code = SPLITS.index(split)
        start, stop = np.searchsorted(self.splits, [code, code + 1])
        return Split(self.images[start:stop], self.labels[start:stop])


def is_image_folder_source(path: str | Path) -> bool:
    """A folder, or a file this reader answers for: an archive it reads, or a plain .tar (which
    it refuses, saying why)."""
    path = Path(path)
    name = path.name.lower()
    return path.is_dir() or (path.is_file() and (name.endswith(ARCHIVE_SUFFIXES) or name.endswith(PLAIN_TAR)))


def dataset_name(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_image_folder(
    source: str | Path,
    cache_dir: str | Path,
    *,
    quiet: bool = False,
    test_size: float = DEFAULT_TEST_SIZE,
    split_seed: int = DEFAULT_SPLIT_SEED,
    center_crop: bool = DEFAULT_CENTER_CROP,
) -> Dataset:
    """Read an image-folder dataset (a folder or an archive of one), through the .npz cache kept
    in `cache_dir`. `test_size` and `split_seed` carve the test split of a `<class>/<image>`
    folder (a split layout ignores them); `center_crop`: see the module docstring."""
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise DatasetError(f"{path}: no such folder or archive")
    _check_source_kind(path)
    check_size(test_size, "test size", allow_zero=False)
    key = _source_key(path, center_crop)
    cache_file = _cache_path(path, Path(cache_dir).expanduser(), center_crop)
    decoded = _read_cache(cache_file, key, path)
    if decoded is None:
        contents, folders = _list_archive(path) if path.is_file() else _list_folder(path)
        placed = _place(contents, folders, path)
        classes = _check_layout(placed, path)
        decoded = _decode(placed.files, classes, path, crop=center_crop, quiet=quiet)
        _write_cache(cache_file, key, decoded)
    return _to_dataset(decoded, path, test_size=test_size, split_seed=split_seed)


def _check_source_kind(path: Path) -> None:
    name = path.name.lower()
    if path.is_dir() or name.endswith(ARCHIVE_SUFFIXES):
        return
    if name.endswith(PLAIN_TAR):
        raise DatasetError(
            f"{path}: a plain .tar is not accepted: a cut-off .tar reads as a complete, shorter one, so "
            f"images could go missing unnoticed. Compress it (gzip {path.name} makes a .tar.gz; xz, a .tar.xz), "
            f"make a .zip, or extract it and pass the folder"
        )
    raise DatasetError(
        f"{path} is neither a folder nor a {ARCHIVE_NAMES} archive of one "
        f"(an image-folder dataset is {LAYOUTS})"
    )


def _to_dataset(decoded: _Decoded, source: Path, *, test_size: float, split_seed: int) -> Dataset:
    train, test = decoded.part("train"), decoded.part("test")
    unsplit = decoded.part("unsplit")
    if len(unsplit):
        # Carved here, after the cache: deterministic, and a new test_size or seed costs no decoding.
        count = split_count(test_size, len(unsplit), "test size", of=f"the dataset {source.name}")
        train, test = stratified_split(unsplit, count, split_seed, keep_one_each=True)
    val = decoded.part("val")
    return Dataset(name=dataset_name(source), classes=decoded.classes, train=train, test=test,
                   spec=str(source), val=val if len(val) else None)


# --- listing -------------------------------------------------------------------------------


def _skipped(parts: Iterable[str]) -> bool:
    return any(part.startswith(".") or part in IGNORED_NAMES for part in parts)


def _looks_like_image(relpath: str) -> bool:
    """Whether a file outside a class folder is a misplaced image (an error) rather than
    documentation (skipped), by its name."""
    return PurePosixPath(relpath).suffix.lower() in image_suffixes()


def _member_name(name: str) -> str | None:
    """An archive member's path as "a/b/c", or None for the archive's own "." entry and for
    system files."""
    parts = tuple(part for part in PurePosixPath(name).parts if part not in (".", "/"))
    if not parts or _skipped(parts):
        return None
    return "/".join(parts)


def _list_folder(root: Path) -> tuple[list[tuple[str, Callable[[], bytes]]], set[str]]:
    """All files (with a reader each) and all folders, as paths relative to `root`."""
    files: list[tuple[str, Callable[[], bytes]]] = []
    folders: set[str] = set()
    for folder, subfolders, names in os.walk(root):
        rel = Path(folder).relative_to(root)
        subfolders[:] = [s for s in subfolders if not _skipped([s])]
        for s in subfolders:
            folders.add((rel / s).as_posix())
        for name in names:
            if not _skipped([name]):
                files.append(((rel / name).as_posix(), (Path(folder) / name).read_bytes))
    return files, folders


def _list_archive(archive: Path) -> tuple[list[tuple[str, Callable[[], bytes]]], set[str]]:
    kind = next(kind for suffix, kind in ARCHIVES.items() if archive.name.lower().endswith(suffix))
    return _list_zip(archive) if kind == "zip" else _list_compressed_tar(archive, kind)


# Per compressed-tar kind: the stream's first bytes, its opener, and what it is called.
COMPRESSED_TARS = {
    "gz": (b"\x1f\x8b", gzip.open, "a gzip-compressed tar archive (.tar.gz)"),
    "xz": (b"\xfd7zXZ\x00", lzma.open, "an xz-compressed tar archive (.tar.xz)"),
}


def _list_compressed_tar(archive: Path, kind: str) -> tuple[list[tuple[str, Callable[[], bytes]]], set[str]]:
    magic, opener, what = COMPRESSED_TARS[kind]
    _check_magic(archive, (magic,), what)
    contents: list[tuple[str, Callable[[], bytes]]] = []
    folders: set[str] = set()
    total = 0
    try:
        with opener(archive, "rb") as raw:
            # Streaming mode reads the archive once, front to back; members are never written
            # to disk, so no path inside the archive can point outside it.
            with tarfile.open(fileobj=raw, mode="r|") as tar:
                for member in tar:
                    name = _member_name(member.name)
                    if name is None:
                        continue
                    if member.isdir():
                        folders.add(name)
                    elif member.isfile():
                        total += member.size
                        _check_member_size(archive, name, member.size, total)
                        data = tar.extractfile(member).read()
                        contents.append((name, lambda data=data: data))
                    else:
                        # Listed, not dropped: in a class folder it is an error (_place), since
                        # an image stored as a link would otherwise go missing unnoticed.
                        contents.append((name, _NotAFile(_member_kind(member))))
            # tarfile takes a cut-off header for the end of the archive and stops quietly, which
            # would lose images; gzip's length and CRC check and xz's end-of-stream check catch any
            # cut, but only when the stream is read to its end, so read the rest (the padding).
            while raw.read(1 << 20):
                pass
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError, OSError) as exc:
        raise DatasetError(f"{archive} could not be read as a tar archive ({exc})") from None
    return contents, folders


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.islnk():  # to another member: named as the members are ("./a/b" as "a/b")
        return f"a hard link to {_member_name(member.linkname) or member.linkname}"
    if member.issym():
        return f"a symbolic link to {member.linkname}"
    return "a device or FIFO"


def _list_zip(archive: Path) -> tuple[list[tuple[str, Callable[[], bytes]]], set[str]]:
    # A local file header, or the end record of an empty zip.
    _check_magic(archive, (b"PK\x03\x04", b"PK\x05\x06"), "a zip archive")
    contents: list[tuple[str, Callable[[], bytes]]] = []
    folders: set[str] = set()
    try:
        with zipfile.ZipFile(archive) as zf:
            # The central directory (at the end: a cut-off zip has none) declares every member's
            # size; all of them are checked before any is read. zipfile never returns more than a
            # member declares, and checks its CRC when it is read.
            members = []
            total = 0
            for info in zf.infolist():
                # Some Windows tools write "train\\cat\\1.jpg"; the zip format's separator is "/".
                name = _member_name(info.filename.replace("\\", "/"))
                if name is None:
                    continue
                if info.is_dir() or info.filename.endswith("\\"):
                    folders.add(name)
                    continue
                total += info.file_size
                _check_member_size(archive, name, info.file_size, total)
                members.append((name, info))
            for name, info in members:
                data = zf.read(info)
                contents.append((name, lambda data=data: data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, lzma.LZMAError,
            NotImplementedError, RuntimeError, ValueError, OSError) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression method.
        raise DatasetError(f"{archive} could not be read as a zip archive ({exc})") from None
    return contents, folders


def _check_magic(archive: Path, magics: tuple[bytes, ...], what: str) -> None:
    with open(archive, "rb") as f:
        start = f.read(max(len(m) for m in magics))
    if not any(start.startswith(m) for m in magics):
        raise DatasetError(f"{archive} is not {what}")


def _check_member_size(archive: Path, name: str, size: int, total: int) -> None:
    if size > MAX_MEMBER_BYTES or total > MAX_ARCHIVE_BYTES:
        raise DatasetError(
            f"{archive}: {name} ({size:,} bytes) takes the archive past the limits of "
            f"{MAX_MEMBER_BYTES >> 20} MiB per file and {MAX_ARCHIVE_BYTES >> 30} GiB in all; "
            f"extract it and pass the folder instead"
        )


# --- the layout ----------------------------------------------------------------------------


def _all_folders(contents: list[tuple[str, Callable[[], bytes]]], folders: set[str]) -> set[str]:
    """Every folder, listed or not: an archive (a zip, above all) may list only the files."""
    every = set(folders)
    for rel, _ in contents:
        parts = rel.split("/")[:-1]
        every.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return every


def _children(folders: set[str], prefix: str) -> set[str]:
    """The names of the folders directly inside `prefix` ("" for the top, else "name/")."""
    return {f[len(prefix):] for f in folders if f.startswith(prefix) and "/" not in f[len(prefix):]}


def _is_split_folder(name: str) -> bool:
    return name.lower() in SPLIT_FOLDERS


def _find_root(contents: list[tuple[str, Callable[[], bytes]]], folders: set[str]) -> tuple[str, bool]:
    """(the folder the layout sits in, "" or "name/"; whether it is a split layout)."""
    top = _children(folders, "")
    if any(_is_split_folder(name) for name in top):
        return "", True
    images_at_top = any("/" not in rel and _looks_like_image(rel) for rel, _ in contents)
    if len(top) == 1 and not images_at_top:
        wrapper = f"{top.pop()}/"
        inside = _children(folders, wrapper)
        if any(_is_split_folder(name) for name in inside):
            return wrapper, True
        if inside:
            # One folder holding folders: a folder of class folders (as an archive of a folder
            # has it). One folder holding only images is one class, which _check_layout refuses.
            return wrapper, False
    return "", False


def _place(contents: list[tuple[str, Callable[[], bytes]]], folders: set[str], source: Path) -> _Placed:
    """Find the layout and where it sits, and give each file its split and class."""
    folders = _all_folders(contents, folders)
    prefix, split_layout = _find_root(contents, folders)
    folder_names = _split_folder_names(folders, prefix, source) if split_layout else {}
    split_of = {name: split for split, name in folder_names.items()}
    # The depth of a class folder below `prefix`: <split>/<class> or <class>.
    depth = 2 if split_layout else 1
    counts: dict[str, dict[str, int]] = {}
    for folder in folders:
        parts = folder[len(prefix):].split("/") if folder.startswith(prefix) else []
        if len(parts) == depth and (not split_layout or parts[0] in split_of):
            split = split_of[parts[0]] if split_layout else "unsplit"
            counts.setdefault(split, {}).setdefault(parts[-1], 0)
    files: list[_File] = []
    loose: list[str] = []
    not_files: list[str] = []
    for rel, read in contents:
        if not rel.startswith(prefix):
            continue  # a README beside the one top-level folder
        parts = rel[len(prefix):].split("/")
        if len(parts) == 1:
            if _looks_like_image(rel):
                loose.append(rel)  # an image beside the class (or split) folders
            continue  # a README or LICENSE
        if split_layout and parts[0] not in split_of:
            continue  # a folder beside train/ and test/
        if len(parts) < depth + 1:
            loose.append(rel)  # directly in train/
            continue
        if isinstance(read, _NotAFile):
            not_files.append(f"{rel} ({read.what})")
            continue
        split = split_of[parts[0]] if split_layout else "unsplit"
        class_name = parts[depth - 1]
        counts[split][class_name] += 1
        files.append(_File(rel, split, class_name, read))
    if loose:
        where = "directly in a split folder or beside the class folders" if split_layout else "beside the class folders"
        raise DatasetError(
            f"{source}: {len(loose)} file(s) {where}, outside any class folder (move each into its "
            f"class folder): {_listing(sorted(loose))}"
        )
    if not_files:
        raise DatasetError(
            f"{source}: {len(not_files)} archive member(s) in class folders are not regular files, and "
            f"only those are read as images: {_listing(sorted(not_files))}. GNU tar stores a file it has "
            f"already archived as a hard link to the first copy: archive the folder again with "
            f"`tar --hard-dereference --dereference` (every file stored as itself), or extract it and "
            f"pass the folder"
        )
    return _Placed(files, counts, folder_names, prefix)


def _split_folder_names(folders: set[str], prefix: str, source: Path) -> dict[str, str]:
    """split -> the folder that holds it ("val" -> "validation"); two folders for one split
    (val/ and validation/, or Train/ and train/, as an archive made on Linux can hold) are an error:
    which one holds the split's images is a guess."""
    names: dict[str, list[str]] = {}
    for name in sorted(_children(folders, prefix)):
        if _is_split_folder(name):
            names.setdefault(SPLIT_FOLDERS[name.lower()], []).append(name)
    doubled = []
    for split, found in names.items():
        if len(found) > 1:
            both = " and ".join(f"{prefix}{n}/" for n in found)
            if len({n.lower() for n in found}) == 1:
                doubled.append(f"{both} (names that differ only in case: merge them into one "
                               f"{prefix}{found[0].lower()}/ folder)")
            else:
                what = {"val": "validation"}.get(split, split)
                doubled.append(f"{both} (both name the {what} split: keep the one that holds its images)")
    if doubled:
        raise DatasetError(f"{source}: two folders for one split: {_listing(doubled)}")
    return {split: found[0] for split, found in names.items()}


def _check_layout(placed: _Placed, source: Path) -> list[str]:
    """The class names, once the layout is known to be whole; else a DatasetError that says
    what is wrong with it."""
    counts, names = placed.counts, placed.folder_names
    if names:
        _check_splits_present(placed, source)
    elif not counts.get("unsplit"):
        raise DatasetError(
            f"{source}: no class folders found; an image-folder dataset is {LAYOUTS}"
        )
    shown = {split: f"{placed.prefix}{names[split]}/" if names else placed.prefix for split in counts}
    empty = [f"{shown[split]}{name}" for split in SPLITS for name, n in sorted(counts.get(split, {}).items()) if n == 0]
    if empty:
        raise DatasetError(f"{source}: empty class folder(s), every class needs images: {_listing(empty)}")
    if names:
        _check_same_classes(counts, shown, source)
    classes = sorted(set().union(*counts.values()))
    if len(classes) < 2:
        where = ", ".join(f"{shown[split]}{classes[0]}/" for split in SPLITS if split in counts)
        raise DatasetError(
            f"{source}: a single class ({where}); a classifier needs at least 2 classes, each in its own "
            f"folder: {LAYOUTS}"
        )
    if "unsplit" in counts:
        _check_splittable(counts["unsplit"], source)
    return classes


def _check_splits_present(placed: _Placed, source: Path) -> None:
    counts, names, prefix = placed.counts, placed.folder_names, placed.prefix
    if not counts.get("train"):
        raise DatasetError(
            f"{source}: no {prefix}train/ split (or it has no class folders); a split layout is "
            f"{SPLIT_LAYOUT}"
        )
    if not counts.get("test"):
        raise DatasetError(
            f"{source}: {prefix}train/ but no test/ split (or it has no class folders): add "
            f"test/<class>/<image>, the images the model is tested on, or use the <class>/<image> layout "
            f"(no train/ level), from which a stratified test split is carved (--test-size)"
        )
    if "val" in names and not counts.get("val"):
        raise DatasetError(f"{source}: {prefix}{names['val']}/ has no class folders; put its images in "
                           f"{names['val']}/<class>/<image>, or remove it to carve the validation split off train/")


def _check_same_classes(counts: dict[str, dict[str, int]], shown: dict[str, str], source: Path) -> None:
    splits = [split for split in SPLITS if split in counts]
    every = set().union(*(counts[split] for split in splits))
    differing = []
    for name in sorted(every):
        missing = [shown[split] for split in splits if name not in counts[split]]
        if missing:
            present = [shown[split] for split in splits if name in counts[split]]
            differing.append(f"{name} (in {', '.join(present)}; not in {', '.join(missing)})")
    if differing:
        folders = [shown[split] for split in splits]
        together = ", ".join(folders[:-1]) + f" and {folders[-1]}"
        raise DatasetError(f"{source}: {together} must have the same class folders: {_listing(differing)}")


def _check_splittable(counts: dict[str, int], source: Path) -> None:
    too_small = [f"{name} ({n} image)" for name, n in sorted(counts.items()) if n < 2]
    if too_small:
        raise DatasetError(
            f"{source}: {len(too_small)} class(es) too small to split into training and test images (each "
            f"class needs at least 2): {_listing(too_small)}; add images, or give train/ and test/ folders"
        )


# --- decoding ------------------------------------------------------------------------------


def _decode(files: list[_File], classes: list[str], source: Path, *, crop: bool, quiet: bool) -> _Decoded:
    from tqdm import tqdm

    index = {name: i for i, name in enumerate(classes)}
    # A fixed order (split, class, then file name), whatever order the archive or the disk lists.
    files = sorted(files, key=lambda f: (SPLITS.index(f.split), index[f.class_name], f.relpath))
    images = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    problems: list[str] = []
    bar = tqdm(files, desc=f"decoding {source.name}", unit="img", file=sys.stderr,
               disable=quiet or not sys.stderr.isatty(), leave=False)
    for i, f in enumerate(bar):
        try:
            images[i] = to_model_input(decode_image(f.read(), label=f.relpath), IMAGE_SIZE, crop=crop)
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
    splits = np.array([SPLITS.index(f.split) for f in files], dtype=np.int8)
    return _Decoded(classes, images, labels, splits)


def _listing(items: list[str]) -> str:
    shown = "; ".join(items[:MAX_LISTED_PROBLEMS])
    more = len(items) - MAX_LISTED_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")


# --- cache ---------------------------------------------------------------------------------


def _source_key(path: Path, center_crop: bool) -> str:
    """Changes whenever the source may have changed (size and mtime of the archive, or of every
    file in the folder) or the images would be prepared differently (center_crop)."""
    digest = hashlib.sha1(f"v{CACHE_VERSION}|{path}|crop={center_crop}".encode(), usedforsecurity=False)
    if path.is_file():
        st = path.stat()
        digest.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        for folder, _, names in sorted(os.walk(path)):
            for name in sorted(names):
                file = os.path.join(folder, name)
                # A dangling symbolic link has no target to stat; its own entry stands for it (and
                # in a class folder it is reported unreadable when decoded).
                st = os.stat(file) if os.path.exists(file) else os.lstat(file)
                digest.update(f"|{os.path.relpath(file, path)}|{st.st_size}|{st.st_mtime_ns}".encode())
            digest.update(f"|dir:{os.path.relpath(folder, path)}".encode())
    return digest.hexdigest()


def _cache_path(path: Path, cache_dir: Path, center_crop: bool) -> Path:
    # One cache file per source path and way of preparing its images (a changed source replaces
    # it rather than adding one; cropped and squashed copies live side by side).
    tag = hashlib.sha1(str(path).encode(), usedforsecurity=False).hexdigest()[:12]
    return cache_dir / CACHE_FOLDER / f"{dataset_name(path)}-{tag}{'' if center_crop else '-squashed'}.npz"


def _read_cache(cache_file: Path, key: str, source: Path) -> _Decoded | None:
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            decoded = _Decoded([str(c) for c in z["classes"]], z["images"], z["labels"], z["splits"])
        n = len(decoded.labels)
        if decoded.images.shape != (n, IMAGE_SIZE, IMAGE_SIZE, 3) or decoded.splits.shape != (n,) \
                or np.any(np.diff(decoded.splits) < 0):
            raise ValueError("its arrays do not fit together")
    except Exception as exc:  # a damaged .npz reports itself in many ways (BadZipFile, KeyError, ...)
        warnings.warn(f"ignoring the damaged cache file {cache_file} ({exc}); decoding {source} again", stacklevel=3)
        return None
    return decoded


def _write_cache(cache_file: Path, key: str, decoded: _Decoded) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{cache_file.name}.", suffix=".tmp", dir=cache_file.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                key=np.array(key),
                classes=np.array(decoded.classes),
                images=decoded.images,
                labels=decoded.labels,
                splits=decoded.splits,
            )
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared data dir should stay readable
        os.replace(tmp, cache_file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
