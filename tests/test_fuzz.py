"""Fuzzing the readers of untrusted files: whatever bytes come in, the image decoder, the CIFAR
pickle reader and the image-folder archive reader either return well-formed data or raise their
named error (ImageError, DatasetError); they never crash with another exception, never run code,
and never leave a half-written cache behind.

Hypothesis runs a fixed number of examples, derandomized and without an example database, so CI
sees the same inputs on every run (about 30 s on 2 cores). The regression tests under each
heading are the crashes fuzzing found, kept as plain tests."""

from __future__ import annotations

import builtins
import functools
import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import mini_cifar100_batches, official_meta_bytes, py2_pickle_bytes
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from cifar100.data.cifar_archives import CIFAR100, read_extracted, read_pickle
from cifar100.errors import DatasetError, ImageError
from cifar100.data.image_folder import CACHE_FOLDER, load_image_folder
from cifar100.data.images import decode_image, to_model_input


def fuzz(examples: int) -> settings:
    """Reproducible: the same `examples` inputs on every run, nothing remembered between runs."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Pillow warns about the damage it works around ("Corrupt EXIF data", "Truncated File Read");
# these tests are about what it raises, not what it says.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# --- mutations ------------------------------------------------------------------------------


def mutations(positions: st.SearchStrategy[int]) -> st.SearchStrategy[list[tuple]]:
    """1 to 6 edits: set a byte, cut the file, insert or delete a few bytes, or write an extreme
    32-bit value where parsers read sizes, offsets and counts. A negative position counts from
    the end."""
    edit = st.one_of(
        st.tuples(st.just("set"), positions, st.integers(0, 255)),
        st.tuples(st.just("truncate"), positions, st.just(0)),
        st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("delete"), positions, st.integers(1, 8)),
        st.tuples(st.just("word"), positions, st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00"])),
    )
    return st.lists(edit, min_size=1, max_size=6)


def mutate(data: bytes, edits: list[tuple]) -> bytes:
    out = bytearray(data)
    for op, position, arg in edits:
        i = position % (len(out) + 1)
        if op == "set" and i < len(out):
            out[i] = arg
        elif op == "truncate":
            del out[i:]
        elif op == "insert":
            out[i:i] = arg
        elif op == "delete":
            del out[i : i + arg]
        elif op == "word":
            out[i : i + 4] = arg
    return bytes(out)


# --- images ---------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@functools.cache
def seed_images() -> dict[str, bytes]:
    """Small valid files in the formats users bring, each with something for a parser to get
    wrong: alpha, palettes, 16-bit samples, animation, EXIF orientation, progressive JPEG."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (12, 20, 4), dtype=np.uint8))
    gray16 = Image.fromarray(rng.integers(0, 65536, (12, 20), dtype=np.uint16))
    palette = rgb.convert("P")
    exif = rgb.getexif()
    exif[0x0112] = 6  # rotate on display
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return {
        "jpeg": encode(rgb, "JPEG", quality=80, exif=exif.tobytes()),
        "jpeg-progressive": encode(rgb, "JPEG", progressive=True),
        "png": encode(rgb, "PNG"),
        "png-rgba": encode(rgba, "PNG"),
        "png-16bit-gray": encode(gray16, "PNG"),
        "png-palette-transparent": encode(palette, "PNG", transparency=3),
        "gif-animated": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "webp": encode(rgb, "WEBP", quality=80),
        "webp-lossless-rgba": encode(rgba, "WEBP", lossless=True),
        "bmp": encode(rgb, "BMP"),
        "tiff": encode(rgb, "TIFF"),
        "tiff-16bit-gray": encode(gray16, "TIFF"),
    }


def assert_decodes_or_refuses(data: bytes) -> None:
    """The contract: an RGB image whose model input is uint8 (32, 32, 3), or an ImageError."""
    try:
        img = decode_image(data)
    except ImageError as exc:
        assert str(exc).startswith("the upload: ")
        return
    assert img.mode == "RGB" and img.width > 0 and img.height > 0
    x = to_model_input(img)
    assert x.dtype == np.uint8 and x.shape == (32, 32, 3)


def test_seed_images_decode():
    for name, data in seed_images().items():
        assert to_model_input(decode_image(data)).shape == (32, 32, 3), name


# The first 64 bytes hold the headers that steer a parser: half of the edits land there.
@fuzz(1500)
@given(name=st.sampled_from(sorted(seed_images())), edits=mutations(st.one_of(st.integers(0, 63), st.integers(0, 1 << 20))))
def test_mutated_images_decode_or_raise_image_error(name, edits):
    assert_decodes_or_refuses(mutate(seed_images()[name], edits))


# File signatures, so that random bytes reach the format parsers and not only the "unknown
# format" path.
MAGICS = [b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
          b"BM", b"II*\x00", b"MM\x00*", b"DDS |\x00\x00\x00", b"8BPS", b"\x00\x00\x01\x00", b"P6\n"]


@fuzz(600)
@given(magic=st.sampled_from(MAGICS), body=st.binary(max_size=600))
def test_arbitrary_bytes_decode_or_raise_image_error(magic, body):
    assert_decodes_or_refuses(magic + body)


def tiff_with_strip_offsets_of_type(tag_type: int) -> bytes:
    """A valid 4x4 white TIFF whose StripOffsets entry is re-typed: as RATIONAL (5) it reads as
    a fraction, as LONG8 (16) as 8 bytes of pixel data (0xff...: 2**64 - 1)."""
    data = bytearray(encode(Image.new("RGB", (4, 4), (255, 255, 255)), "TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == 273:  # StripOffsets
            struct.pack_into("<H", data, entry + 2, tag_type)
    return bytes(data)


def dds_with_pixel_format_flags(flags: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (4, 4)), "DDS"))
    struct.pack_into("<I", data, 80, flags)  # DDS_PIXELFORMAT.dwFlags
    return bytes(data)


@pytest.mark.parametrize(
    "data, pillow_raised",
    [
        (tiff_with_strip_offsets_of_type(5), "TypeError"),
        (tiff_with_strip_offsets_of_type(16), "OverflowError"),
        (dds_with_pixel_format_flags(0), "NotImplementedError"),
    ],
    ids=["tiff-rational-offset", "tiff-huge-offset", "dds-unknown-pixel-format"],
)
def test_crafted_headers_found_by_fuzzing_are_image_errors(tmp_path, data, pillow_raised):
    with pytest.raises(ImageError, match=rf"the upload: the image is corrupt \({pillow_raised}"):
        decode_image(data)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=r"photo.jpg: the image is (truncated or )?corrupt"):
        decode_image(path)


def test_postscript_is_refused_without_running_ghostscript(tmp_path):
    """Pillow renders EPS by running Ghostscript, an external program with a history of
    exploits through crafted PostScript. A `gs` on the PATH that records its calls shows whether
    decoding a file named like a photo runs it (in a fresh process: Pillow caches where gs is)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ran = tmp_path / "gs-ran"
    fake_gs = bin_dir / "gs"
    fake_gs.write_text(f"#!/bin/sh\necho \"$@\" >> {ran}\n")
    fake_gs.chmod(0o755)
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(encode(Image.new("RGB", (4, 4), (1, 2, 3)), "EPS"))
    script = textwrap.dedent(
        """
        import sys
        from cifar100.errors import ImageError
        from cifar100.data.images import decode_image
        try:
            decode_image(sys.argv[1])
        except ImageError as exc:
            print(exc)
        """
    )
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run([sys.executable, "-c", script, str(photo)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not ran.exists(), f"Ghostscript was run: {ran.read_text()}"
    assert "holiday.jpg: not an image" in result.stdout


# --- CIFAR pickles ----------------------------------------------------------------------------


class Forged:
    """Pickles as `func(*args)`, then `__setstate__(state)` if a state is given: any call a
    crafted file could ask the unpickler to make."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def numpy_reconstruct():
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed numpy.core
    return core.multiarray._reconstruct


def forged_array(shape, raw: bytes, dtype_state=(3, "|", None, None, None, -1, -1, 0), dtype_name="u1"):
    """The opcodes numpy writes for an array, with every field chosen by the caller."""
    dtype = Forged(np.dtype, (dtype_name, False, True), dtype_state)
    return Forged(numpy_reconstruct(), (np.ndarray, (0,), b"b"), (1, shape, dtype, False, raw))


@functools.cache
def small_batches() -> tuple[dict, dict]:
    """Train and test batch dicts of 4 and 2 real CIFAR-100 images, official format."""
    train, test = mini_cifar100_batches()

    def head(batch, n):
        return {k: v[:n] if isinstance(v, (list, np.ndarray)) else v for k, v in batch.items()}

    return head(train, 4), head(test, 2)


def write_extracted(folder: Path, train: bytes, test: bytes | None = None, meta: bytes | None = None) -> Path:
    """An extracted cifar-100-python folder: the official meta and the given pickles."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta").write_bytes(meta if meta is not None else official_meta_bytes())
    (folder / "train").write_bytes(train)
    (folder / "test").write_bytes(test if test is not None else py2_pickle_bytes(small_batches()[1]))
    return folder


def assert_reads_or_refuses(folder: Path) -> None:
    """The contract of the pickle reader: a well-formed dataset, or a DatasetError."""
    try:
        dataset = read_extracted(CIFAR100, folder)
    except DatasetError:
        return
    # (A damaged meta may well name 99 or 101 classes: the labels must then fit those.)
    assert all(isinstance(name, str) for name in dataset.classes + dataset.coarse_classes)
    for split in (dataset.train, dataset.test):
        n = len(split.labels)
        assert split.images.dtype == np.uint8 and split.images.shape == (n, 32, 32, 3)
        assert split.labels.dtype == np.int64 and split.coarse_labels.dtype == np.int64
        assert split.coarse_labels.shape == (n,)
        assert n == 0 or (0 <= split.labels.min() and split.labels.max() < dataset.num_classes)
        assert n == 0 or (0 <= split.coarse_labels.min() and split.coarse_labels.max() < len(dataset.coarse_classes))


def test_small_batches_read(tmp_path):
    train, test = small_batches()
    dataset = read_extracted(CIFAR100, write_extracted(tmp_path, py2_pickle_bytes(train)))
    assert len(dataset.train) == 4 and len(dataset.test) == 2
    assert dataset.train.labels.tolist() == train[b"fine_labels"]


# Pickle structure sits at both ends (labels and names first; the array's dtype, shape and
# flags around its bytes at the end), the pixel bytes in between.
@fuzz(700)
@given(
    member=st.sampled_from(["train", "meta"]),
    edits=mutations(st.one_of(st.integers(0, 700), st.integers(-80, -1), st.integers(0, 1 << 20))),
)
def test_mutated_pickles_read_or_raise_dataset_error(tmp_path_factory, member, edits):
    train = py2_pickle_bytes(small_batches()[0])
    meta = official_meta_bytes()
    if member == "train":
        train = mutate(train, edits)
    else:
        meta = mutate(meta, edits)
    assert_reads_or_refuses(write_extracted(tmp_path_factory.mktemp("cifar"), train, meta=meta))


def label_lists(n: int) -> st.SearchStrategy:
    """Label fields as a damaged or forged file may hold them."""
    whole = st.integers(-3, 2**70)
    return st.one_of(
        st.lists(st.integers(0, 99), min_size=n, max_size=n),  # good
        st.lists(whole, min_size=0, max_size=n + 2),
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=n, max_size=n),
        st.lists(st.lists(st.integers(0, 99), max_size=2), min_size=n, max_size=n),
        st.builds(lambda v: np.array(v, dtype=np.int64), st.lists(st.integers(-3, 2**40), min_size=n, max_size=n)),
        st.binary(max_size=n),
        st.none(),
    )


def image_rows(n: int) -> st.SearchStrategy:
    return st.one_of(
        st.just(np.zeros((n, 3072), dtype=np.uint8)),  # good
        st.builds(
            lambda dtype, rows, width: np.zeros((rows, width), dtype=dtype),
            st.sampled_from([np.uint8, np.int64, np.float32, np.uint16]), st.integers(0, n + 2), st.sampled_from([3072, 3071, 1024]),
        ),
        st.just(np.zeros((n, 3, 1024), dtype=np.uint8)),
        st.lists(st.lists(st.integers(0, 255), max_size=4), max_size=3),  # ragged nesting
        st.binary(max_size=64),
        st.integers(),
    )


@st.composite
def forged_batches(draw):
    """A batch dict with fields missing, of the wrong type or length, or arrays that declare a
    size their bytes do not have."""
    n = draw(st.integers(0, 4))
    fields = {
        "data": image_rows(n),
        "fine_labels": label_lists(n),
        "coarse_labels": label_lists(n),
        "filenames": st.lists(st.binary(max_size=8), min_size=n, max_size=n),
    }
    batch = {}
    for key, strategy in fields.items():
        if draw(st.integers(0, 9)) == 0:
            continue  # a missing key
        batch[key.encode() if draw(st.booleans()) else key] = draw(strategy)
    if draw(st.booleans()):
        rows = draw(st.integers(0, 10**9))
        raw = bytes(draw(st.sampled_from([0, 3072, 3072 * n])))
        batch[b"data"] = forged_array((rows, 3072), raw)
    return batch


@fuzz(400)
@given(batch=forged_batches(), protocol=st.sampled_from(["py2", 2, 3, 4]))
def test_forged_batches_read_or_raise_dataset_error(tmp_path_factory, batch, protocol):
    data = py2_pickle_bytes(batch) if protocol == "py2" else pickle.dumps(batch, protocol=protocol)
    assert_reads_or_refuses(write_extracted(tmp_path_factory.mktemp("cifar"), data))


def batch_with(**fields) -> bytes:
    train = dict(small_batches()[0])
    train.update({key.encode(): value for key, value in fields.items()})
    return pickle.dumps(train, protocol=2)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"data": [[1, 2], [3]]}, r"'data' must be uint8 rows of 3072 values"),
        ({"fine_labels": [2**70, 0, 0, 0]}, r"'fine_labels' is not a list of integers"),
        ({"fine_labels": [float("inf"), 0, 0, 0]}, r"'fine_labels' is not a list of integers"),
        ({"coarse_labels": [0.5, 0, 0, 0]}, r"'coarse_labels' is not a list of integers"),
    ],
    ids=["ragged-data", "huge-label", "infinite-label", "fractional-label"],
)
def test_wrong_types_found_by_fuzzing_are_dataset_errors(tmp_path, fields, message):
    with pytest.raises(DatasetError, match=message):
        read_extracted(CIFAR100, write_extracted(tmp_path, batch_with(**fields)))


def test_a_few_bytes_cannot_declare_a_huge_array(tmp_path):
    """numpy's own unpickling lets a file call ndarray((50000, 3072)): 150 MB of images out of a
    pickle of 200 bytes, and with a larger shape, all the memory there is."""
    n = 50_000
    for data in (
        Forged(np.ndarray, ((n, 3072), "u1")),
        forged_array((n, 3072), b"\0" * 3072),
    ):
        train = pickle.dumps({b"data": data, b"fine_labels": Forged(np.ndarray, ((n,), "i8")),
                              b"coarse_labels": Forged(np.ndarray, ((n,), "i8"))}, protocol=2)
        assert len(train) < 4000
        with pytest.raises(DatasetError, match=r"train: the pickle (calls numpy.ndarray|declares a 50000 x 3072 array)"):
            read_extracted(CIFAR100, write_extracted(tmp_path, train))


def test_malformed_dtype_state_is_an_error_not_a_crash(tmp_path):
    """numpy's dtype.__setstate__ crashes the interpreter (segfault) on this state, which a
    mutated official pickle produced; read in a child process so a crash is a failure here."""
    train = pickle.dumps({b"data": forged_array((4, 3072), bytes(4 * 3072), dtype_state=(3, b"N", None, -1, -1, 0))}, protocol=2)
    path = write_extracted(tmp_path, train) / "train"
    script = "import sys\nfrom cifar100.data.cifar_archives import read_pickle\ntry:\n    read_pickle(sys.argv[1])\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"the reader crashed (exit {result.returncode}): {result.stderr[-2000:]}"
    assert result.stdout.startswith("DatasetError") and "train" in result.stdout


@pytest.mark.parametrize(
    "make_call",
    [
        lambda marker: Forged(os.system, (f"touch {marker}",)),
        lambda marker: Forged(subprocess.call, (["touch", str(marker)],)),
        lambda marker: Forged(builtins.exec, (f"open({str(marker)!r}, 'w').close()",)),
        lambda marker: Forged(np.save, (str(marker), np.zeros(1))),
        lambda marker: Forged(Path.touch, (marker,)),
    ],
    ids=["os.system", "subprocess.call", "exec", "numpy.save", "Path.touch"],
)
@pytest.mark.parametrize("protocol", [2, 4])
def test_pickles_that_would_run_code_are_refused(tmp_path, make_call, protocol):
    marker = tmp_path / "ran"
    train = pickle.dumps({b"data": make_call(marker), b"fine_labels": [0]}, protocol=protocol)
    with pytest.raises(DatasetError, match=r"train: the pickle asks for .*; refusing it"):
        read_extracted(CIFAR100, write_extracted(tmp_path / "cifar", train))
    assert not marker.exists() and not marker.with_suffix(".npy").exists()


@pytest.mark.parametrize(
    "opcode",
    [pickle.BINBYTES8 + struct.pack("<Q", 2**40), pickle.BINUNICODE8 + struct.pack("<Q", 2**62),
     pickle.LONG4 + struct.pack("<i", 2**31 - 1), pickle.BINBYTES + struct.pack("<I", 2**32 - 1)],
    ids=["bytes-1TB", "unicode-4EB", "long-2GB", "bytes-4GB"],
)
def test_huge_declared_lengths_are_refused_at_once(tmp_path, opcode):
    path = tmp_path / "train"
    path.write_bytes(b"\x80\x04" + opcode + b"only a few bytes")
    with pytest.raises(DatasetError, match=r"train is truncated or corrupt"):
        read_pickle(path)


def test_a_huge_memo_index_costs_no_memory(tmp_path):
    """Python's C unpickler allocates its memo as an array as long as the largest index a file
    names: these 12 bytes would cost it 1 GiB (a fuzzed pickle took 36 s and 8 GB). Measured in a
    child process, which reports its own peak memory: VmHWM, the high-water mark of its own
    address space (ru_maxrss would carry over the parent's size across fork and exec)."""
    path = tmp_path / "train"
    path.write_bytes(b"\x80\x02]" + pickle.LONG_BINPUT + struct.pack("<I", 2**27) + b".")
    script = textwrap.dedent(
        """
        import sys
        from cifar100.data.cifar_archives import read_pickle
        value = read_pickle(sys.argv[1])
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        print(value, int(status.split()[0]) // 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    value, peak_mib = result.stdout.rsplit(" ", 1)
    assert value == "[]" and int(peak_mib) < 400, result.stdout


def test_a_pickle_cannot_change_the_readers_own_objects(tmp_path):
    """BUILD sets the attributes of whatever object is on the stack; here the reader's stand-in
    for numpy's scalar(), whose defaults it tries to replace."""
    state = pickle.dumps((None, {"__defaults__": (1, 2)}), protocol=2)[2:-1]  # without PROTO and STOP
    path = tmp_path / "train"
    path.write_bytes(b"\x80\x02cnumpy._core.multiarray\nscalar\n" + state + pickle.BUILD + pickle.STOP)
    with pytest.raises(DatasetError, match=r"train: the pickle sets the state of a function"):
        read_pickle(path)
    from cifar100.data import cifar_archives

    assert cifar_archives._scalar.__defaults__ is None


# --- image-folder archives ----------------------------------------------------------------------


@functools.cache
def pets_archive() -> tuple[bytes, bytes]:
    """A tiny image-folder dataset as (tar bytes, .tar.gz bytes): two classes, PNG and JPEG."""
    rng = np.random.default_rng(1)

    def picture(fmt: str) -> bytes:
        return encode(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)), fmt)

    members = {
        "pets/train/cat/1.png": picture("PNG"), "pets/train/cat/2.jpg": picture("JPEG"),
        "pets/train/dog/1.png": picture("PNG"), "pets/train/dog/2.jpg": picture("JPEG"),
        "pets/test/cat/1.png": picture("PNG"), "pets/test/dog/1.jpg": picture("JPEG"),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    return raw, gzip.compress(raw, mtime=0)


def cache_contents(data_dir: Path) -> list[str]:
    folder = data_dir / CACHE_FOLDER
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def assert_well_formed(dataset) -> None:
    for split in (dataset.train, dataset.test):
        assert split.images.dtype == np.uint8 and split.images.shape == (len(split.labels), 32, 32, 3)
        assert split.labels.dtype == np.int64
        assert len(split.labels) == 0 or split.labels.max() < dataset.num_classes


def test_pets_archive_reads(tmp_path):
    archive = tmp_path / "pets.tar.gz"
    archive.write_bytes(pets_archive()[1])
    dataset = load_image_folder(archive, tmp_path / "data", quiet=True)
    assert dataset.classes == ["cat", "dog"] and len(dataset.train) == 4 and len(dataset.test) == 2


@fuzz(300)
@given(layer=st.sampled_from(["gzip", "tar"]), edits=mutations(st.one_of(st.integers(0, 600), st.integers(-64, -1), st.integers(0, 1 << 20))))
def test_mutated_archives_read_or_raise_and_leave_the_cache_consistent(tmp_path_factory, layer, edits):
    """Damage either the compressed bytes (gzip's checks catch it, but only at the end of the
    stream) or the tar inside a valid gzip stream (headers, sizes, names, image bytes). The load
    gives a well-formed dataset or a DatasetError; afterwards the cache holds no temporary file,
    and the good archive put back in place loads as itself, not as a stale cache."""
    raw, good = pets_archive()
    work = tmp_path_factory.mktemp("pets")
    archive, data_dir = work / "pets.tar.gz", work / "data"
    archive.write_bytes(mutate(good, edits) if layer == "gzip" else gzip.compress(mutate(raw, edits), mtime=0))
    try:
        assert_well_formed(load_image_folder(archive, data_dir, quiet=True))
        event(f"{layer}: loaded")
    except DatasetError:
        event(f"{layer}: DatasetError")
        assert cache_contents(data_dir) == []  # nothing written for a source that failed
    assert all(name.endswith(".npz") for name in cache_contents(data_dir)), cache_contents(data_dir)

    archive.write_bytes(good)
    # A new mtime, as a fresh download gets: this loop is faster than some filesystems' clocks.
    later = archive.stat().st_mtime_ns + 10**9
    os.utime(archive, ns=(later, later))
    expected = load_image_folder(archive, work / "fresh-data", quiet=True)
    again = load_image_folder(archive, data_dir, quiet=True)
    assert again.classes == expected.classes
    assert np.array_equal(again.train.images, expected.train.images) and np.array_equal(again.test.labels, expected.test.labels)


def test_a_gzip_bomb_archive_is_refused_from_its_headers(tmp_path, monkeypatch):
    """A few KB of .tar.gz whose one member claims (and holds) far more than the per-file
    limit: refused before its bytes are read into memory."""
    import cifar100.data.image_folder as image_folder

    monkeypatch.setattr(image_folder, "MAX_MEMBER_BYTES", 1 << 20)
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("train/cat/huge.png")
        info.size = 8 << 20  # zeros: compresses to almost nothing
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert archive.stat().st_size < 64 << 10
    with pytest.raises(DatasetError, match="huge.png.*limits"):
        image_folder.load_image_folder(archive, tmp_path / "cache", quiet=True)
