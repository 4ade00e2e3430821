"""The official CIFAR-10 and CIFAR-100 python archives: where they live, their checksums, and
how to read their pickles.

Cache layout under the data dir (`--data-dir`, else `$CIFAR100_DATA`, else ~/.cache/cifar100):

    cifar-100-python.tar.gz            the archive, present only once its md5 matched
    cifar-100-python.tar.gz.part       an interrupted download, resumed by the next run
    cifar-100-python/                  the extracted pickles ...
    cifar-100-python/.extracted.json   ... complete and verified: written last, inside the
                                       temporary folder that is then renamed into place

Extraction happens once: into a temporary sibling folder, where the member md5s are checked
and every pickle is read (so a truncated or inconsistent one never gets a marker), and the
folder is renamed into place only then. `cifar100 data import` installs a copy the user already
has the same way (`import_cifar`). A folder without the marker (one torchvision or Keras left)
is read only after its members pass the same checks.

The download URL is `$CIFAR100_MIRROR/<archive name>` when that variable is set (a local
mirror, or a test server), else the official one. `ArchiveSpec` holds everything that
identifies an archive, so tests build one for an archive of their own with its own md5.

The pickles are read with a restricted unpickler that builds numpy arrays and nothing else: the
format is data, and a pickle that asks for any other Python object is refused.
"""

from __future__ import annotations

import codecs
import json
import lzma
import math
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cifar100.data.types import Dataset, Split
from cifar100.data.download import download_file, file_md5, manual_download_hint
from cifar100.errors import DatasetError, DownloadError
from cifar100.fileio import atomic_write_text

MIRROR_ENV = "CIFAR100_MIRROR"
MARKER = ".extracted.json"
IMAGE_BYTES = 32 * 32 * 3


@dataclass(frozen=True)
class ArchiveSpec:
    name: str  # "cifar100" or "cifar10": the dataset name and the pickle layout to read
    url: str
    md5: str
    filename: str  # the archive's name in the cache
    folder: str  # the folder the archive unpacks to
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    size: int | None = None  # bytes; only for the progress bar and messages
    member_md5s: dict[str, str] = field(default_factory=dict)  # pickle name -> md5, if known

    def with_base_url(self, base_url: str) -> "ArchiveSpec":
        return replace(self, url=f"{base_url.rstrip('/')}/{self.filename}")


CIFAR100 = ArchiveSpec(
    name="cifar100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    filename="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    size=169_001_437,
    member_md5s={
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
)

CIFAR10 = ArchiveSpec(
    name="cifar10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    filename="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    size=170_498_071,
    member_md5s={
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
)

ARCHIVES = {spec.name: spec for spec in (CIFAR100, CIFAR10)}


def archive_spec(name: str, base_url: str | None = None) -> ArchiveSpec:
    """The registry entry for `name`, its URL moved to `base_url` or `$CIFAR100_MIRROR`."""
    spec = ARCHIVES[name]
    base_url = base_url or os.environ.get(MIRROR_ENV)
    return spec.with_base_url(base_url) if base_url else spec


def load_cifar(spec: ArchiveSpec, data_dir: str | Path, *, download: bool = True, quiet: bool = False) -> Dataset:
    """The dataset of `spec` from the cache in `data_dir`; downloads, verifies and extracts it
    the first time. An extracted folder without the marker (as torchvision and Keras leave
    it, or unpacked by hand) is verified and adopted instead of downloading again."""
    data_dir = Path(data_dir).expanduser()
    folder = data_dir / spec.folder
    if (folder / MARKER).is_file():
        return read_extracted(spec, folder)
    if folder.is_dir():
        try:
            return _adopt_folder(spec, folder)
        except DatasetError:
            if not download and not (data_dir / spec.filename).is_file():
                raise
            # Incomplete or damaged (a copy or an extraction that stopped midway): it is
            # replaced below by a verified copy, which is all it could ever have been.
    archive = ensure_archive(spec, data_dir, download=download, quiet=quiet)
    return _install(spec, archive, folder, {"archive": spec.filename, "md5": spec.md5, "url": spec.url})


def import_hint(spec: ArchiveSpec) -> str:
    return (
        f"If you have a copy of {spec.name} (the official archive, any tar of its {spec.folder}/ folder, "
        f"or the folder torchvision or Keras left in their cache), install it with "
        f"`cifar100 data import PATH --dataset {spec.name}`; or train on a folder of your own images with "
        f"`--dataset PATH`."
    )


def ensure_archive(spec: ArchiveSpec, data_dir: str | Path, *, download: bool = True, quiet: bool = False) -> Path:
    """The path of the verified archive in `data_dir`, downloading it if needed and allowed."""
    data_dir = Path(data_dir).expanduser()
    archive = data_dir / spec.filename
    if archive.is_file():
        actual = file_md5(archive)
        if actual != spec.md5:
            raise DownloadError(
                f"{archive} has md5 {actual}, expected {spec.md5}: it is not the {spec.name} "
                f"archive, or it is damaged. Delete it so it is downloaded again, or replace it. "
                + manual_download_hint(spec.url, spec.md5, archive, spec.size) + " " + import_hint(spec)
            )
        return archive
    if not download:
        raise DownloadError(
            f"{spec.name} is not in {data_dir} and downloading is switched off. "
            + manual_download_hint(spec.url, spec.md5, archive, spec.size) + " " + import_hint(spec)
        )
    try:
        return download_file(spec.url, archive, spec.md5, size=spec.size, quiet=quiet)
    except DownloadError as exc:
        raise DownloadError(f"{exc} {import_hint(spec)}") from None


@dataclass(frozen=True)
class ImportResult:
    dataset: Dataset
    folder: Path  # where the verified pickles now live
    member_md5s: dict[str, str]  # member name -> its md5, as checked
    replaced: bool  # an earlier installed copy was replaced


def import_cifar(spec: ArchiveSpec, source: str | Path, data_dir: str | Path) -> ImportResult:
    """Install a copy the user already has into the cache in `data_dir`, exactly as a download
    would: `source` is the official archive, any tar archive (.tar.gz, .tar.xz, .tar.bz2,
    .tar) of the official folder, or an extracted folder (the official folder itself or one
    that holds it). Every member must match the official md5; nothing is installed otherwise."""
    source = Path(source).expanduser()
    if not source.exists():
        raise DatasetError(f"{source} does not exist")
    folder = Path(data_dir).expanduser() / spec.folder
    replaced = (folder / MARKER).is_file()
    dataset = _install(spec, source, folder, {"imported_from": str(source.resolve())})
    checked = json.loads((folder / MARKER).read_text(encoding="utf-8"))["member_md5s"]
    return ImportResult(dataset, folder, checked, replaced)


def _member_names(spec: ArchiveSpec) -> tuple[str, ...]:
    return (*spec.train_files, *spec.test_files, spec.meta_file)


def _install(spec: ArchiveSpec, source: Path, folder: Path, marker: dict[str, Any]) -> Dataset:
    """Copy the members out of `source` (an archive or a folder) into a temporary sibling of
    `folder`, verify and read them there, write the marker last, and only then move the folder
    into place: a failure at any point leaves the cache as it was."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.", suffix=".extracting", dir=folder.parent))
    retired = folder.with_name(staging.name.replace(".extracting", ".replaced"))
    try:
        if source.is_dir():
            _copy_members(spec, source, staging)
        else:
            _extract_members(spec, source, staging)
        _verify_members(spec, staging, source)
        dataset = read_extracted(spec, staging)
        marker = {**marker, "member_md5s": {name: file_md5(staging / name) for name in _member_names(spec)}}
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        os.chmod(staging, 0o755)  # mkdtemp makes it private; a shared data dir should stay readable
        if folder.exists():
            # A verified copy being replaced by an import: moved aside first, so the cache
            # holds the old copy or the new one at every moment, never neither.
            os.rename(folder, retired)
        try:
            os.rename(staging, folder)
        except OSError:
            # Another process finished the same extraction first; theirs is as good as ours.
            if not (folder / MARKER).is_file():
                if retired.exists() and not folder.exists():
                    os.rename(retired, folder)  # the copy that was there stays
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
    return dataset


def _adopt_folder(spec: ArchiveSpec, folder: Path) -> Dataset:
    """An extracted folder without our marker: verified like an import, then marked in place."""
    missing = [name for name in _member_names(spec) if not (folder / name).is_file()]
    if missing:
        raise DatasetError(
            f"{folder} is not a complete copy of {spec.name}: it has no {', '.join(missing)}. Delete the "
            f"folder so that {spec.name} is downloaded again, or install a good copy with "
            f"`cifar100 data import PATH --dataset {spec.name}`."
        )
    _verify_members(spec, folder, folder)
    dataset = read_extracted(spec, folder)
    marker = {"adopted": True, "member_md5s": {name: file_md5(folder / name) for name in _member_names(spec)}}
    atomic_write_text(folder / MARKER, json.dumps(marker, indent=2) + "\n")
    return dataset


def _other_dataset(spec: ArchiveSpec, names: list[str]) -> ArchiveSpec | None:
    """The other CIFAR archive, if the paths `names` (of an archive or a folder) are its folder."""
    for other in ARCHIVES.values():
        if other.name != spec.name and any(other.folder in Path(n).parts for n in names):
            return other
    return None


def _wrong_dataset(spec: ArchiveSpec, source: Path, other: ArchiveSpec) -> DatasetError:
    return DatasetError(
        f"{source} holds {other.name} ({other.folder}/), not {spec.name} ({spec.folder}/): "
        f"import it with --dataset {other.name}"
    )


def _copy_members(spec: ArchiveSpec, source: Path, staging: Path) -> None:
    """From an extracted folder: the official folder itself, or a folder that holds it."""
    root = source / spec.folder if (source / spec.folder).is_dir() else source
    missing = [name for name in _member_names(spec) if not (root / name).is_file()]
    if missing:
        other = _other_dataset(spec, [str(source.resolve()), *(str(p) for p in source.iterdir())])
        if other is not None:
            raise _wrong_dataset(spec, source, other)
        raise DatasetError(
            f"{source} is not a {spec.name} folder: it has no {', '.join(missing)} "
            f"(expected {spec.folder}/ with {', '.join(_member_names(spec))})"
        )
    for name in _member_names(spec):
        shutil.copyfile(root / name, staging / name)


def _extract_members(spec: ArchiveSpec, archive: Path, staging: Path) -> None:
    """Copy out only the pickles we read, by name, so no path inside the archive can write
    anywhere else. Any tar compression is accepted; the members may sit at `<folder>/<name>`
    or deeper (`./`, a parent folder)."""
    wanted = set(_member_names(spec))
    seen: list[str] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                path = Path(member.name)
                seen.append(member.name)
                if len(path.parts) < 2 or path.parts[-2] != spec.folder or path.name not in wanted:
                    continue
                if not member.isfile():
                    raise DatasetError(f"{archive}: {member.name} is not a regular file")
                wanted.discard(path.name)
                source = tar.extractfile(member)
                with open(staging / path.name, "wb") as target:
                    shutil.copyfileobj(source, target)
    except tarfile.ReadError as exc:
        if not seen:
            raise DatasetError(
                f"{archive} is not a tar archive (not gzip, bzip2, xz or plain tar): give the official {spec.filename}, a tar of "
                f"its {spec.folder}/ folder (.tar.gz, .tar.xz, .tar.bz2 or .tar), or the extracted folder"
            ) from None
        raise DatasetError(f"{archive} could not be unpacked after {len(seen)} members ({_one_line(exc)}): "
                           "it is truncated or damaged") from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        raise DatasetError(f"{archive} could not be unpacked ({_one_line(exc)}): it is truncated or damaged") from None

    if wanted:
        other = _other_dataset(spec, seen)
        if other is not None:
            raise _wrong_dataset(spec, archive, other)
        raise DatasetError(f"{archive} does not contain {', '.join(f'{spec.folder}/{n}' for n in sorted(wanted))}")


def _one_line(exc: BaseException) -> str:
    """tarfile's messages can span lines; the CLI's errors are one line."""
    return " ".join(str(exc).split())


def _verify_members(spec: ArchiveSpec, folder: Path, source: Path) -> None:
    for name, expected in spec.member_md5s.items():
        actual = file_md5(folder / name)
        if actual != expected:
            raise DatasetError(
                f"{source}: {spec.folder}/{name} has md5 {actual}, expected {expected} (the official "
                f"{spec.name} file): this copy is damaged or is not the official one"
            )


def read_extracted(spec: ArchiveSpec, folder: str | Path) -> Dataset:
    """Read the pickles of an extracted archive into a `Dataset`."""
    folder = Path(folder)
    meta = read_pickle(folder / spec.meta_file)
    if spec.name == "cifar100":
        classes = _names(meta, "fine_label_names", folder / spec.meta_file)
        coarse_classes = _names(meta, "coarse_label_names", folder / spec.meta_file)
        label_key, coarse_key = "fine_labels", "coarse_labels"
    else:
        classes = _names(meta, "label_names", folder / spec.meta_file)
        coarse_classes = None
        label_key, coarse_key = "labels", None
    splits = []
    for files in (spec.train_files, spec.test_files):
        parts = [_read_batch(folder / name, label_key, coarse_key, len(classes), coarse_classes) for name in files]
        splits.append(
            Split(
                images=np.concatenate([p.images for p in parts]),
                labels=np.concatenate([p.labels for p in parts]),
                coarse_labels=None if coarse_key is None else np.concatenate([p.coarse_labels for p in parts]),
            )
        )
    return Dataset(
        name=spec.name, classes=classes, train=splits[0], test=splits[1], coarse_classes=coarse_classes, spec=spec.name
    )


def _read_batch(path: Path, label_key: str, coarse_key: str | None, num_classes: int, coarse_classes) -> Split:
    batch = read_pickle(path)
    try:
        data = np.asarray(_field(batch, "data", path))
    except (TypeError, ValueError, OverflowError):  # ragged lists, numbers too large for any dtype
        data = np.empty(0, dtype=object)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        raise DatasetError(
            f"{path}: 'data' must be uint8 rows of {IMAGE_BYTES} values, got {data.dtype} {data.shape}"
        )
    # Rows are channel-planar (1024 red, 1024 green, 1024 blue), each plane row-major.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = _labels(batch, label_key, path, len(images), num_classes)
    coarse = None
    if coarse_key is not None:
        coarse = _labels(batch, coarse_key, path, len(images), len(coarse_classes))
    return Split(np.ascontiguousarray(images), labels, coarse)


def _labels(batch: dict, key: str, path: Path, count: int, num_classes: int) -> np.ndarray:
    try:
        labels = np.asarray(_field(batch, key, path))
    except (TypeError, ValueError, OverflowError):  # ragged nesting, numbers beyond any dtype
        raise DatasetError(f"{path}: '{key}' is not a list of integers") from None
    if labels.size == 0:
        labels = labels.astype(np.int64)  # [] reads as float64
    # Whole numbers only: int64 casting would turn 0.5 into 0, inf into an OverflowError, and a
    # number beyond int64 into another one.
    if labels.dtype.kind not in "iu" or (labels.dtype.kind == "u" and labels.size and labels.max() > np.iinfo(np.int64).max):
        raise DatasetError(f"{path}: '{key}' is not a list of integers")
    labels = labels.astype(np.int64)
    if labels.shape != (count,):
        raise DatasetError(f"{path}: {count} images but {labels.size} '{key}' (the lengths must match)")
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{path}: '{key}' go from {labels.min()} to {labels.max()}, outside 0..{num_classes - 1}")
    return labels


def _names(meta: dict, key: str, path: Path) -> list[str]:
    names = _field(meta, key, path)
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{path}: '{key}' must be a non-empty list of names")
    return [n.decode("latin-1") if isinstance(n, bytes) else str(n) for n in names]


def _field(mapping: Any, key: str, path: Path) -> Any:
    # The official pickles were written by Python 2: read with encoding="bytes", keys are bytes.
    if isinstance(mapping, dict):
        for candidate in (key.encode("ascii"), key):
            if candidate in mapping:
                return mapping[candidate]
    raise DatasetError(f"{path} has no '{key}' entry: not a CIFAR pickle")


def read_pickle(path: str | Path) -> Any:
    """Unpickle a CIFAR file: dicts, lists, strings, numbers and numeric numpy arrays, nothing
    else. A numpy array in a top-level dict value comes back as an ndarray."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
        if isinstance(obj, dict):
            obj = {key: _unwrap(value) for key, value in obj.items()}
        return obj
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing") from None
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    except Exception as exc:  # pickle reports damage as many types: EOFError, UnpicklingError, ValueError...
        raise DatasetError(
            f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); delete its folder so it "
            f"is extracted again from the verified archive"
        ) from None


# numpy pickles an array as `_reconstruct(ndarray, (0,), b"b")` followed by
# `__setstate__((1, shape, dtype, fortran_order, raw_bytes))`, and its dtype as
# `dtype("u1", False, True)` followed by `__setstate__((3, "|", None, None, None, -1, -1, 0))`.
# Handing numpy's own objects to the unpickler lets a crafted file call `ndarray((10**9, 3072))`
# (gigabytes of memory from a pickle of 100 bytes) or pass `dtype.__setstate__` a malformed tuple
# (numpy crashes the interpreter on some). So those names build the inert stand-ins below, which
# check every field and make the array from the bytes the file actually holds.

_NUMBER_DTYPE = re.compile(r"[biuf][1248]")  # bool, ints, unsigned ints, floats
_BYTE_ORDERS = {"|", "<", ">", "="}


class _NdarrayName:
    """What the name numpy.ndarray unpickles to: a token that `_reconstruct` checks for, not a
    class a pickle could call."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise DatasetError("the pickle calls numpy.ndarray(...) itself, which numpy never writes; refusing it")


_NDARRAY = _NdarrayName()


class _PickledDtype:
    __slots__ = ("dtype",)

    def __init__(self, name: Any, align: Any = False, copy: Any = False):
        name = name.decode("latin-1") if isinstance(name, bytes) else name
        if not isinstance(name, str) or not _NUMBER_DTYPE.fullmatch(name):
            raise DatasetError(f"the pickle holds an array of type {name!r}, not of numbers; refusing it")
        self.dtype = np.dtype(name)

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, subarray, names, fields, ...): version 3 (4 with metadata) as
        # numpy writes it; a plain number type has no subarray, names or fields.
        if not (isinstance(state, tuple) and 7 <= len(state) <= 9 and state[0] in (1, 2, 3, 4)):
            raise DatasetError(f"the pickle holds a malformed numpy dtype ({state!r:.80})")
        order = state[1].decode("latin-1") if isinstance(state[1], bytes) else state[1]
        if order not in _BYTE_ORDERS or state[2:5] != (None, None, None):
            raise DatasetError(f"the pickle holds a malformed numpy dtype ({state!r:.80})")
        self.dtype = self.dtype.newbyteorder(order)


class _PickledArray:
    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise DatasetError(f"the pickle holds a malformed numpy array ({state!r:.80})")
        version, shape, dtype, fortran_order, raw = state
        if not (
            version == 1
            and isinstance(shape, tuple)
            and all(isinstance(n, int) and n >= 0 for n in shape)
            and isinstance(dtype, _PickledDtype)
            and fortran_order in (0, 1)
            and isinstance(raw, bytes)
        ):
            raise DatasetError("the pickle holds a malformed numpy array")
        needed = math.prod(shape) * dtype.dtype.itemsize
        if len(raw) != needed:
            raise DatasetError(
                f"the pickle declares a {' x '.join(map(str, shape))} array ({needed:,} bytes) but "
                f"holds {len(raw):,} bytes for it"
            )
        self.array = np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order="F" if fortran_order else "C")


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _PickledArray:
    if cls is not _NDARRAY or shape != (0,):
        raise DatasetError("the pickle builds a numpy array in a way numpy never writes")
    return _PickledArray()


def _scalar(dtype: Any, raw: Any) -> Any:
    if not (isinstance(dtype, _PickledDtype) and isinstance(raw, bytes) and len(raw) == dtype.dtype.itemsize):
        raise DatasetError("the pickle holds a malformed numpy number")
    return np.frombuffer(raw, dtype=dtype.dtype)[0]


def _unwrap(value: Any) -> Any:
    if isinstance(value, _PickledArray):
        if value.array is None:
            raise DatasetError("the pickle holds a numpy array without its data")
        return value.array
    return value


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _PickledDtype,
    # Python 3 writes bytes this way under pickle protocol 2.
    ("_codecs", "encode"): codecs.encode,
}


class _CifarUnpickler(pickle._Unpickler):
    """The pure-Python unpickler (only ~0.1 s slower on CIFAR-100's 150 MB train pickle): its memo
    is a dict, where the C one allocates an array as long as the largest memo index, so a LONG_BINPUT
    of 2**31 in a 12-byte file would take 32 GB. BUILD (set an object's state) is allowed on the
    array and dtype stand-ins only."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise DatasetError(f"the pickle asks for {module}.{name}, which a CIFAR pickle never needs; refusing it")
        return _ALLOWED_GLOBALS[(module, name)]

    def load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if not isinstance(target, (_PickledArray, _PickledDtype)):
            raise DatasetError(f"the pickle sets the state of a {type(target).__name__}, which a CIFAR pickle never does")
        target.__setstate__(state)

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build
