"""Data fixtures (a pytest plugin, loaded by conftest.py). Session-scoped unless noted; all of
them work offline.

- `shared_data`: Path of ../shared/data (real CIFAR-10 JPEGs and partial real CIFAR-100). A
  user's clone has no ../shared: every fixture and helper that reads it skips the test then,
  naming the missing file (`require_shared`); CI has it and runs them all.
- `mini_cifar100_archive`: Path of a .tar.gz in the exact official CIFAR-100 python format
  (Python-2 pickles with byte keys, the official `meta` file byte for byte) holding the 1,117
  train and 916 test real CIFAR-100 images of ../shared/data/cifar100-partial, with their
  official fine and coarse labels. All 100 fine classes appear in train.
- `mini_cifar100_spec`: the `ArchiveSpec` of that archive (its own md5; url on a closed port,
  so anything that tries to download fails loudly).
- `mini_cifar100_dir`: a data dir where that archive is already placed and extracted by the real
  code, so `load_dataset("cifar100", mini_cifar100_dir)` and
  `cifar100 <command> --data-dir <mini_cifar100_dir>` work offline. Treat it as read-only.
- `mini_cifar10_archive`: a small synthetic archive in the official CIFAR-10 python format
  (5 data batches + test batch + batches.meta); `mini_cifar10_spec` is its `ArchiveSpec`.
- `cifar10_jpeg`: Path of ../shared/data/cifar10-jpeg.tar.gz (real CIFAR-10, 50k/10k JPEGs).
- `cifar10_jpeg_data_dir`: a data dir whose image-folder cache already holds cifar10-jpeg
  decoded, so `load_dataset(str(cifar10_jpeg), cifar10_jpeg_data_dir)` takes well under a
  second. It lives in .pytest_cache/, so the ~15-25 s decode happens once per machine (and
  again only when the archive changes). Treat it as read-only.
- `cifar100_data_dir`: a data dir with the real, full CIFAR-100 installed from
  ../shared/data/cifar-100-python.tar.xz (kept in .pytest_cache/, like the one above).
- `http_server` (function-scoped): a local HTTP server on 127.0.0.1 with Range support and
  switchable misbehaviour (see `FileServer`). `closed_port_url` (function-scoped): a URL on
  which nothing listens (connection refused).

Helpers for tests: `py2_pickle_bytes`, `write_cifar100_archive`, `write_cifar10_archive`,
`spec_for` (an ArchiveSpec for an archive built here).
"""

from __future__ import annotations

import functools
import io
import pickle
import socket
import struct
import tarfile
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cifar100.data.cifar_archives import CIFAR10, CIFAR100, ArchiveSpec, import_cifar, load_cifar
from cifar100.errors import Cifar100Error
from cifar100.data.download import file_md5

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR100_PARTIAL = SHARED_DATA / "cifar100-partial"
CIFAR10_JPEG = SHARED_DATA / "cifar10-jpeg.tar.gz"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --- pickles exactly as Python 2's cPickle wrote the official files ---------------------------


class Py2Pickler(pickle._Pickler):
    """Protocol 2, every string as a Python 2 `str` (SHORT_BINSTRING/BINSTRING), memo numbered
    from 1, numpy under its old module name: on the official `meta` dict this reproduces the
    official file byte for byte (tested)."""

    def memoize(self, obj):
        if self.fast:
            return
        index = len(self.memo) + 1
        self.write(self.put(index))
        self.memo[id(obj)] = index, obj

    def save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode("ascii"))
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def planar_rows(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 32, 32, 3) -> the official (N, 3072) channel-planar rows."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def write_tar(path: Path, folder: str, members: dict[str, bytes], compression: str = "gz") -> Path:
    """A tar archive of `folder`/<name> members; `compression`: "gz", "xz", "bz2" or "" (plain tar)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"compresslevel": 1} if compression in ("gz", "bz2") else {}  # level 1: fast
    with tarfile.open(path, f"w:{compression}", **options) as tar:
        info = tarfile.TarInfo(folder)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def cifar100_batch(rows: np.ndarray, fine, coarse, filenames, batch_label: str) -> dict:
    # Key order of the official train/test pickles.
    return {
        b"filenames": [bytes(f) for f in filenames],
        b"batch_label": batch_label.encode(),
        b"fine_labels": [int(v) for v in fine],
        b"coarse_labels": [int(v) for v in coarse],
        b"data": rows,
    }


def cifar100_members(train: dict, test: dict, meta: bytes, overrides: dict | None = None) -> dict[str, bytes]:
    """The files of `cifar-100-python/`: `train`/`test` are batch dicts (see cifar100_batch),
    `meta` the meta file's bytes, `overrides` member name -> bytes to store instead (e.g. a
    truncated pickle) or None to leave the member out."""
    members = {"meta": meta, "train": py2_pickle_bytes(train), "test": py2_pickle_bytes(test)}
    members.update(overrides or {})
    return {name: data for name, data in members.items() if data is not None}


def write_cifar100_archive(path: Path, train: dict, test: dict, meta: bytes, overrides: dict | None = None,
                           compression: str = "gz") -> Path:
    return write_tar(path, "cifar-100-python", cifar100_members(train, test, meta, overrides), compression)


def write_cifar10_archive(path: Path, images: np.ndarray, labels: np.ndarray, test_images, test_labels, overrides: dict | None = None) -> Path:
    members = {
        "batches.meta": py2_pickle_bytes(
            {b"num_cases_per_batch": len(images) // 5, b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}
        )
    }
    for i, (x, y) in enumerate(zip(np.array_split(images, 5), np.array_split(labels, 5)), start=1):
        members[f"data_batch_{i}"] = py2_pickle_bytes(
            {
                b"batch_label": f"training batch {i} of 5".encode(),
                b"labels": [int(v) for v in y],
                b"data": planar_rows(x),
                b"filenames": [f"img_{i}_{j}.png".encode() for j in range(len(y))],
            }
        )
    members["test_batch"] = py2_pickle_bytes(
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(v) for v in test_labels],
            b"data": planar_rows(test_images),
            b"filenames": [f"test_{j}.png".encode() for j in range(len(test_labels))],
        }
    )
    members.update(overrides or {})
    return write_tar(path, "cifar-10-batches-py", members)


def spec_for(official: ArchiveSpec, archive: Path, url: str = "http://127.0.0.1:9/unused") -> ArchiveSpec:
    """The registry entry for an archive built by a test: its own md5 and size, no member md5s."""
    return replace(official, url=url, md5=file_md5(archive), size=archive.stat().st_size, member_md5s={})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- mini CIFAR-100 from the real partial data ------------------------------------------------


def require_shared(path: Path) -> Path:
    """`path` under ../shared/data, or the calling test is skipped with the reason."""
    if not path.exists():
        pytest.skip(f"needs {path}: the real data beside the project (a clone without ../shared skips this; CI has it)")
    return path


def official_meta_bytes() -> bytes:
    """The official cifar-100-python/meta file, byte for byte."""
    return require_shared(CIFAR100_PARTIAL / "meta").read_bytes()


def mini_cifar100_batches() -> tuple[dict, dict]:
    """The train and test batch dicts of the mini CIFAR-100 (cached: copy before changing)."""
    require_shared(CIFAR100_PARTIAL)
    return _mini_cifar100_batches()


@functools.lru_cache(maxsize=1)
def _mini_cifar100_batches() -> tuple[dict, dict]:
    images = np.load(CIFAR100_PARTIAL / "images.npz")
    labels = np.load(CIFAR100_PARTIAL / "labels.npz")
    batches = []
    for split, batch_label in (("train", "training batch 1 of 1"), ("test", "testing batch 1 of 1")):
        n = len(images[f"{split}_data"])
        # The partial images are the first n of each official split: their labels and file
        # names are the first n of the official lists.
        assert np.array_equal(images[f"{split}_fine"], labels[f"{split}_fine"][:n])
        batches.append(
            cifar100_batch(
                images[f"{split}_data"],
                labels[f"{split}_fine"][:n],
                labels[f"{split}_coarse"][:n],
                labels[f"{split}_filenames"][:n],
                batch_label,
            )
        )
    return batches[0], batches[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared(SHARED_DATA)


@pytest.fixture(scope="session")
def mini_cifar100_archive(tmp_path_factory, shared_data) -> Path:
    train, test = mini_cifar100_batches()
    meta = official_meta_bytes()
    path = tmp_path_factory.mktemp("mini-cifar100-archive") / CIFAR100.filename
    return write_cifar100_archive(path, train, test, meta)


@pytest.fixture(scope="session")
def mini_cifar100_spec(mini_cifar100_archive) -> ArchiveSpec:
    return spec_for(CIFAR100, mini_cifar100_archive, url=f"http://127.0.0.1:{closed_port()}/{CIFAR100.filename}")


@pytest.fixture(scope="session")
def mini_cifar100_dir(tmp_path_factory, mini_cifar100_archive, mini_cifar100_spec) -> Path:
    data_dir = tmp_path_factory.mktemp("mini-cifar100-data")
    (data_dir / CIFAR100.filename).write_bytes(mini_cifar100_archive.read_bytes())
    # The real verify-and-extract code, with the md5 of our archive instead of the official one.
    load_cifar(mini_cifar100_spec, data_dir, download=False, quiet=True)
    return data_dir


@pytest.fixture(scope="session")
def mini_cifar10_images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(10)
    train_labels = np.repeat(np.arange(10), 6)
    test_labels = np.repeat(np.arange(10), 2)
    return (
        rng.integers(0, 256, (len(train_labels), 32, 32, 3), dtype=np.uint8),
        train_labels,
        rng.integers(0, 256, (len(test_labels), 32, 32, 3), dtype=np.uint8),
        test_labels,
    )


@pytest.fixture(scope="session")
def mini_cifar10_archive(tmp_path_factory, mini_cifar10_images) -> Path:
    path = tmp_path_factory.mktemp("mini-cifar10-archive") / CIFAR10.filename
    return write_cifar10_archive(path, *mini_cifar10_images)


@pytest.fixture(scope="session")
def mini_cifar10_spec(mini_cifar10_archive) -> ArchiveSpec:
    return spec_for(CIFAR10, mini_cifar10_archive, url=f"http://127.0.0.1:{closed_port()}/{CIFAR10.filename}")


@pytest.fixture(scope="session")
def cifar10_jpeg(shared_data) -> Path:
    return require_shared(CIFAR10_JPEG)


@pytest.fixture(scope="session")
def cifar10_jpeg_data_dir(request, cifar10_jpeg) -> Path:
    from cifar100.data.sources import load_dataset

    # Kept in pytest's cache folder (.pytest_cache/, git-ignored) so that only the first test
    # session on a machine pays the ~15 s decode; the image-folder cache key (the archive's
    # path, size and mtime) still decides whether the .npz there is valid.
    data_dir = request.config.cache.mkdir("cifar10-jpeg-data")
    load_dataset(str(cifar10_jpeg), data_dir, quiet=True)
    return data_dir


@pytest.fixture(scope="session")
def cifar100_data_dir(request, shared_data) -> Path:
    """A data dir holding the real, full CIFAR-100 (../shared/data/cifar-100-python.tar.xz),
    installed by the real `import_cifar` into pytest's cache folder: the ~20 s import happens
    once per machine, and the md5 marker it leaves is checked on every load."""
    from cifar100.data.sources import load_dataset

    archive = require_shared(SHARED_DATA / "cifar-100-python.tar.xz")
    data_dir = request.config.cache.mkdir("cifar100-data")
    try:
        load_dataset("cifar100", data_dir, download=False, quiet=True)
    except Cifar100Error:
        import_cifar(CIFAR100, archive, data_dir)
    return data_dir


# --- a local HTTP server with Range support and misbehaviour on demand ------------------------


class FileServer:
    """Serves `files` (URL path -> bytes) on 127.0.0.1. Switches:
    - `truncate[path] = (n_bytes, times)`: the next `times` responses for `path` announce the
      full Content-Length but send only `n_bytes` of the body, then close the connection.
    - `ignore_range = True`: answer 200 with the whole file even when a Range is asked for.
    `requests` records (path, Range header or None) of every GET."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: dict[str, tuple[int, int]] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def start(self) -> "FileServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                path = self.path.lstrip("/")
                range_header = self.headers.get("Range")
                with server._lock:
                    server.requests.append((path, range_header))
                    cut = server.truncate.get(path)
                    if cut:
                        n_bytes, times = cut
                        if times <= 1:
                            del server.truncate[path]
                        else:
                            server.truncate[path] = (n_bytes, times - 1)
                data = server.files.get(path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if range_header and not server.ignore_range:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if cut:
                    self.wfile.write(body[: cut[0]])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler


@pytest.fixture
def http_server():
    server = FileServer().start()
    yield server
    server.stop()


@pytest.fixture
def closed_port_url() -> str:
    return f"http://127.0.0.1:{closed_port()}"
