"""Image-folder datasets (folders and .tar.gz, the .npz cache, bad inputs), the real CIFAR-10
JPEGs, and the image decoding they share with predict/serve."""

from __future__ import annotations

import io
import struct
import tarfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar100.data.sources import load_dataset
from cifar100.errors import DatasetError, ImageError
from cifar100.data.image_folder import CACHE_FOLDER
from cifar100.data.images import decode_image, to_model_input

COLORS = {"red": (230, 20, 20), "green": (20, 200, 40), "blue": (30, 40, 220)}


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def solid(color, size=(32, 32), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def make_folder(root: Path, counts=(3, 2)) -> Path:
    """train/ and test/ with a red, a green and a blue class: lossless 32x32 PNGs, plus one
    larger JPEG per class that has to be cropped and resized."""
    for split, n in zip(("train", "test"), counts):
        for name, color in COLORS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}.png").write_bytes(encode(solid(color), "PNG"))
            (folder / "big.jpg").write_bytes(encode(solid(color, (80, 48)), "JPEG", quality=95))
    return root


def tar_folder(folder: Path, archive: Path, top: str | None = None) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=top or ".")
    return archive


def cache_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / CACHE_FOLDER).glob("*.npz")) if (data_dir / CACHE_FOLDER).exists() else []


# --- reading --------------------------------------------------------------------------------


def test_folder_reads_classes_labels_and_pixels(tmp_path):
    root = make_folder(tmp_path / "colors")
    dataset = load_dataset(str(root), tmp_path / "data")
    assert dataset.name == "colors" and dataset.spec == str(root.resolve())
    assert dataset.classes == ["blue", "green", "red"]  # sorted folder names
    assert (len(dataset.train), len(dataset.test)) == (12, 9)
    assert dataset.train.images.shape == (12, 32, 32, 3) and dataset.train.images.dtype == np.uint8
    assert dataset.train.labels.dtype == np.int64 and dataset.train.coarse_labels is None
    for split in (dataset.train, dataset.test):
        for image, label in zip(split.images, split.labels):
            expected = np.array(COLORS[dataset.classes[label]])
            assert np.abs(image.astype(int) - expected).max() <= 3  # exact for PNG, near for JPEG
    assert np.all(np.bincount(dataset.train.labels) == 4)


@pytest.mark.parametrize("layout", ["top-folder", "dot-then-top-folder"])
def test_archive_with_a_top_folder_reads_like_the_folder(tmp_path, layout):
    root = make_folder(tmp_path / "parent" / "colors")
    if layout == "top-folder":  # tar czf shapes.tar.gz colors
        archive = tar_folder(root, tmp_path / "shapes.tar.gz", top="colors")
    else:  # cd parent && tar czf shapes.tar.gz .   ("./", "./colors/train/...")
        archive = tar_folder(tmp_path / "parent", tmp_path / "shapes.tar.gz")
    from_folder = load_dataset(str(root), tmp_path / "data")
    from_archive = load_dataset(str(archive), tmp_path / "data")
    assert from_archive.name == "shapes" and from_archive.classes == from_folder.classes
    for a, b in ((from_archive.train, from_folder.train), (from_archive.test, from_folder.test)):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


def test_system_files_are_skipped(tmp_path):
    root = make_folder(tmp_path / "colors")
    (root / "train" / "red" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "train" / "red" / "._0.png").write_bytes(b"AppleDouble")
    (root / "test" / "blue" / "Thumbs.db").write_bytes(b"thumbs")
    (root / "README.txt").write_text("beside train/ and test/: not part of any split")
    macosx = root / "__MACOSX" / "train" / "red"
    macosx.mkdir(parents=True)
    (macosx / "._0.png").write_bytes(b"resource fork")
    archive = tar_folder(root, tmp_path / "colors.tar.gz")
    for source in (root, archive):
        dataset = load_dataset(str(source), tmp_path / "data")
        assert (len(dataset.train), len(dataset.test)) == (12, 9)


# --- the cache ------------------------------------------------------------------------------


def test_second_load_comes_from_the_cache(tmp_path):
    root = make_folder(tmp_path / "colors")
    data_dir = tmp_path / "data"
    first = load_dataset(str(root), data_dir)
    [cache] = cache_files(data_dir)
    # Change the cached pixels: if the second load returns them, it read the cache, not the files.
    with np.load(cache) as z:
        arrays = dict(z)
    arrays["train_images"] = np.full_like(arrays["train_images"], 7)
    np.savez(cache, **arrays)
    second = load_dataset(str(root), data_dir)
    assert np.all(second.train.images == 7) and np.array_equal(second.test.images, first.test.images)


def test_changed_folder_is_read_again(tmp_path):
    root = make_folder(tmp_path / "colors")
    data_dir = tmp_path / "data"
    assert len(load_dataset(str(root), data_dir).train) == 12
    (root / "train" / "red" / "extra.png").write_bytes(encode(solid(COLORS["red"]), "PNG"))
    assert len(load_dataset(str(root), data_dir).train) == 13
    assert len(cache_files(data_dir)) == 1  # replaced, not piled up


def test_changed_archive_is_read_again(tmp_path):
    root = make_folder(tmp_path / "colors")
    archive = tar_folder(root, tmp_path / "colors.tar.gz")
    data_dir = tmp_path / "data"
    assert len(load_dataset(str(archive), data_dir).test) == 9
    (root / "test" / "red" / "extra.png").write_bytes(encode(solid(COLORS["red"]), "PNG"))
    tar_folder(root, archive)
    assert len(load_dataset(str(archive), data_dir).test) == 10


def test_damaged_cache_is_rebuilt(tmp_path):
    root = make_folder(tmp_path / "colors")
    data_dir = tmp_path / "data"
    good = load_dataset(str(root), data_dir)
    [cache] = cache_files(data_dir)
    cache.write_bytes(cache.read_bytes()[:100])
    with pytest.warns(UserWarning, match="damaged cache"):
        again = load_dataset(str(root), data_dir)
    assert np.array_equal(again.train.images, good.train.images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(str(root), data_dir)  # repaired: no warning this time


# --- bad inputs: a named error that names the culprit, and no cache written ------------------


def break_empty_class(root):
    for f in (root / "test" / "green").iterdir():
        f.unlink()
    return r"empty class folder\(s\).*test/green"


def break_text_file(root):
    (root / "train" / "blue" / "notes.txt").write_text("not an image")
    return r"1 file\(s\) in class folders are not readable images.*train/blue/notes.txt: not an image"


def break_zero_bytes(root):
    (root / "train" / "red" / "empty.jpg").write_bytes(b"")
    (root / "test" / "red" / "cut.png").write_bytes(encode(solid(COLORS["red"], (64, 64)), "PNG")[:60])
    return r"2 file\(s\).*test/red/cut.png: the image is truncated or corrupt.*train/red/empty.jpg: the file is empty"


def break_missing_test(root):
    for f in sorted((root / "test").rglob("*"), reverse=True):
        f.rmdir() if f.is_dir() else f.unlink()
    (root / "test").rmdir()
    return r"no test/ split.*train/<class>/\* and test/<class>/\*"


def break_class_mismatch(root):
    (root / "test" / "green").rename(root / "test" / "olive")
    return r"same class folders; only in train: green; only in test: olive"


def break_loose_file(root):
    (root / "train" / "stray.png").write_bytes(encode(solid(COLORS["red"]), "PNG"))
    return r"outside any class folder.*train/stray.png"


def break_no_splits(root):
    (root / "train").rename(root / "training")
    (root / "test").rename(root / "testing")
    return r"no train/ or test/ folder found"


BREAKAGES = [break_empty_class, break_text_file, break_zero_bytes, break_missing_test,
             break_class_mismatch, break_loose_file, break_no_splits]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda f: f.__name__.removeprefix("break_"))
@pytest.mark.parametrize("as_archive", [False, True], ids=["folder", "archive"])
def test_bad_folder_is_a_named_error(tmp_path, breakage, as_archive):
    root = make_folder(tmp_path / "colors")
    message = breakage(root)
    source = tar_folder(root, tmp_path / "colors.tar.gz") if as_archive else root
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(source), data_dir)
    assert cache_files(data_dir) == []


def test_error_keeps_the_good_cache_and_recovery_uses_it(tmp_path):
    root = make_folder(tmp_path / "colors")
    data_dir = tmp_path / "data"
    good = load_dataset(str(root), data_dir)
    [cache] = cache_files(data_dir)
    cached_bytes = cache.read_bytes()
    bad = root / "train" / "red" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match="train/red/broken.jpg"):
        load_dataset(str(root), data_dir)
    assert cache.read_bytes() == cached_bytes
    bad.unlink()
    again = load_dataset(str(root), data_dir)
    assert np.array_equal(again.train.images, good.train.images)


def test_many_bad_files_are_listed_at_once_but_briefly(tmp_path):
    root = make_folder(tmp_path / "colors")
    for i in range(15):
        (root / "train" / "red" / f"bad{i:02d}.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"15 file\(s\).*bad09.txt: not an image[^;]*; and 5 more$"):
        load_dataset(str(root), tmp_path / "data")


def test_cut_off_archive_never_loads_with_images_missing(tmp_path):
    archive = tar_folder(make_folder(tmp_path / "colors"), tmp_path / "colors.tar.gz")
    whole = archive.read_bytes()
    assert len(load_dataset(str(archive), tmp_path / "data").train) == 12
    for cut in (5, 200, 700, len(whole) // 2):
        archive.write_bytes(whole[:-cut])
        with pytest.raises(DatasetError, match=r"could not be read as a tar archive"):
            load_dataset(str(archive), tmp_path / "data")


def test_archive_that_is_not_gzip(tmp_path):
    fake = tmp_path / "colors.tar.gz"
    with tarfile.open(fake, "w") as tar:  # plain tar under a .tar.gz name
        tar.add(make_folder(tmp_path / "colors"), arcname=".")
    with pytest.raises(DatasetError, match=r"not a gzip-compressed tar archive"):
        load_dataset(str(fake), tmp_path / "data")


def test_missing_path(tmp_path):
    from cifar100.errors import ConfigError

    with pytest.raises(ConfigError, match=r"does not exist"):
        load_dataset(str(tmp_path / "nowhere.tar.gz"), tmp_path / "data")


# --- the real CIFAR-10 JPEGs ---------------------------------------------------------------------


def test_cifar10_jpeg_archive(cifar10_jpeg, cifar10_jpeg_data_dir):
    start = time.perf_counter()
    dataset = load_dataset(str(cifar10_jpeg), cifar10_jpeg_data_dir)
    seconds = time.perf_counter() - start
    assert seconds < 5, f"the cached load took {seconds:.1f} s"
    assert len(cache_files(cifar10_jpeg_data_dir)) == 1
    assert dataset.name == "cifar10-jpeg"
    assert dataset.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert (len(dataset.train), len(dataset.test)) == (50_000, 10_000)
    assert np.all(np.bincount(dataset.train.labels) == 5000)
    assert np.all(np.bincount(dataset.test.labels) == 1000)
    assert dataset.train.images.shape == (50_000, 32, 32, 3) and dataset.train.images.dtype == np.uint8

    # The first few JPEGs in the archive, decoded directly, are among their class's images.
    with tarfile.open(cifar10_jpeg, "r|gz") as tar:
        checked = 0
        for member in tar:
            if not member.isfile():
                continue
            split, class_name, _ = member.name.split("/")
            pixels = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB"))
            part = getattr(dataset, split)
            same_class = part.images[part.labels == dataset.classes.index(class_name)]
            assert (same_class == pixels).all(axis=(1, 2, 3)).any(), member.name
            checked += 1
            if checked == 5:
                break


# --- decode_image and to_model_input (shared with predict and serve) --------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_decodes_common_formats_to_rgb(fmt):
    img = decode_image(encode(solid((200, 30, 30), (40, 24)), fmt))
    assert img.mode == "RGB" and img.size == (40, 24)
    assert np.abs(np.asarray(img)[12, 20].astype(int) - (200, 30, 30)).max() <= 12


def test_decodes_special_modes():
    gray16 = Image.fromarray(np.full((8, 8), 40_000, dtype=np.uint16))
    assert decode_image(encode(gray16, "PNG")).getpixel((0, 0)) == (156, 156, 156)  # 40000/257
    transparent = solid((255, 0, 0, 0), mode="RGBA")
    assert decode_image(encode(transparent, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    half = solid((0, 0, 0, 128), mode="RGBA")
    assert decode_image(encode(half, "PNG")).getpixel((0, 0)) == (127, 127, 127)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    assert decode_image(encode(palette, "PNG")).getpixel((0, 0)) == (10, 200, 10)
    assert decode_image(encode(palette, "PNG", transparency=1)).getpixel((0, 0)) == (255, 255, 255)
    assert decode_image(encode(solid(90, mode="L"), "JPEG")).getpixel((0, 0)) == (90, 90, 90)
    cmyk = decode_image(encode(solid((0, 255, 255, 0), mode="CMYK"), "JPEG"))
    assert np.abs(np.asarray(cmyk)[0, 0].astype(int) - (255, 0, 0)).max() <= 3


def test_gif_first_frame_and_exif_orientation(tmp_path):
    frames = [solid((250, 0, 0), (16, 16)), solid((0, 0, 250), (16, 16))]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert np.asarray(decode_image(gif))[0, 0, 0] > 200  # red: the first frame
    landscape = solid((0, 0, 0), (40, 20))
    exif = landscape.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    assert decode_image(encode(landscape, "JPEG", exif=exif.tobytes())).size == (20, 40)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries no pixels: decoding it would need the
    whole image, reading its size needs only the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_too_many_pixels_is_refused_before_decoding():
    with pytest.raises(ImageError, match=r"8000x8000 = 64,000,000 pixels is more than the limit of 50,000,000"):
        decode_image(png_header_only(8000, 8000))
    with pytest.raises(ImageError, match=r"more than the limit of 1,000"):
        decode_image(encode(solid((0, 0, 0), (50, 50)), "PNG"), max_pixels=1000)
    # Pillow's own bomb protection stays on, and becomes an ImageError too.
    for side in (10_000, 20_000):
        with pytest.raises(ImageError, match=r"too many pixels to decode safely"):
            decode_image(png_header_only(side, side), max_pixels=10**12)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", r"empty \(0 bytes\)"),
        (b"GIF89a? no", r"not an image|truncated or corrupt"),
        (b"hello, I am text", r"not an image Pillow can read"),
        (encode(solid((1, 2, 3), (64, 64)), "JPEG")[:300], r"truncated or corrupt"),
    ],
    ids=["empty", "bad-header", "text", "truncated-jpeg"],
)
def test_bad_image_bytes(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_bad_paths_name_the_file(tmp_path):
    with pytest.raises(ImageError, match=r"nothing.png: no such file"):
        decode_image(tmp_path / "nothing.png")
    with pytest.raises(ImageError, match=r"not a file"):
        decode_image(tmp_path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.jpg: the file is empty"):
        decode_image(tmp_path / "empty.jpg")


def test_model_input_crop_squash_and_quality():
    exact = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(to_model_input(Image.fromarray(exact)), exact)  # 32x32: untouched

    stripes = np.zeros((32, 96, 3), dtype=np.uint8)
    stripes[:, :32] = (255, 0, 0)
    stripes[:, 32:64] = (0, 255, 0)
    stripes[:, 64:] = (0, 0, 255)
    cropped = to_model_input(Image.fromarray(stripes))
    assert cropped.shape == (32, 32, 3) and np.all(cropped[:, :, 1] == 255) and cropped[:, :, 0].max() == 0
    squashed = to_model_input(Image.fromarray(stripes), crop=False)
    assert squashed[16, 2, 0] > 240 and squashed[16, 16, 1] > 240 and squashed[16, 29, 2] > 240

    # A 1-pixel checkerboard shrunk 10x averages to grey; a nearest-pixel shrink would alias.
    checker = ((np.indices((320, 320)).sum(axis=0) % 2) * 255).astype(np.uint8)
    grey = to_model_input(Image.fromarray(checker).convert("RGB"))
    assert np.abs(grey.astype(int) - 127).max() <= 8
    assert to_model_input(Image.fromarray(exact), size=16).shape == (16, 16, 3)
