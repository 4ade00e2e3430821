"""Image-folder datasets (the three layouts, as folders and as .tar.gz, .tar.xz and .zip; the
carved test split; the .npz cache; bad inputs), the real CIFAR-10 JPEGs, and the image decoding
they share with predict/serve."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar100.data.image_folder import CACHE_FOLDER, SPLITS
from cifar100.data.images import decode_image, to_model_input
from cifar100.data.sources import load_dataset
from cifar100.errors import ConfigError, DatasetError, ImageError

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



# --- the three layouts, as folders and as archives -------------------------------------------------

PETS = ("cat", "dog", "fox")
# Images per class in each split folder; "" is the <class>/<image> layout (no split folders).
LAYOUTS = {
    "classes": {"": 10},
    "train-test": {"train": 7, "test": 3},
    "train-val-test": {"train": 5, "val": 2, "test": 3},
    "train-validation-test": {"train": 5, "validation": 2, "test": 3},
}


def photo(rng: np.random.Generator, size=(40, 30)) -> bytes:
    """A PNG of noise, not 32x32 (so it is cropped and downscaled), unlike any other."""
    return encode(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)), "PNG")


def write_layout(root: Path, splits: dict[str, int], classes=PETS, seed: int = 0) -> Path:
    """`splits`: images per class in each split folder ("" for class folders at the top); a
    LICENSE.txt beside them, as downloaded datasets have."""
    rng = np.random.default_rng(seed)
    for split, n in splits.items():
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i:02d}.png").write_bytes(photo(rng))
    (root / "LICENSE.txt").write_text("documentation beside the class folders: not part of any split")
    return root


def pack(folder: Path, archive: Path, top: str | None = None, folder_entries: bool = False) -> Path:
    """`folder`'s contents as a .tar.gz, .tar.xz or .zip (by `archive`'s name), under `top`/ if
    given. A zip lists only its files unless `folder_entries` (many zip tools write no folders)."""
    paths = sorted(folder.rglob("*"))
    archive.parent.mkdir(parents=True, exist_ok=True)

    def name(path: Path) -> str:
        inside = path.relative_to(folder)
        return (Path(top) / inside if top else inside).as_posix()

    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in paths:
                if path.is_file():
                    zf.write(path, name(path))
                elif folder_entries:
                    zf.writestr(zipfile.ZipInfo(name(path) + "/"), b"")
    else:
        with tarfile.open(archive, "w:xz" if archive.name.endswith(".tar.xz") else "w:gz") as tar:
            tar.add(folder, arcname=top or ".")
    return archive


def same_split(a, b) -> bool:
    return a is b is None or (np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_reads_the_same_from_a_folder_and_archives(tmp_path, layout):
    root = write_layout(tmp_path / "pets", LAYOUTS[layout])
    dataset = load_dataset(str(root), tmp_path / "data")
    assert dataset.classes == list(PETS) and dataset.name == "pets"
    sizes = (len(dataset.train), 0 if dataset.val is None else len(dataset.val), len(dataset.test))
    assert sizes == {"classes": (24, 0, 6), "train-test": (21, 0, 9)}.get(layout, (15, 6, 9))
    assert (dataset.val is None) == ("val" not in layout)
    for archive in ("pets.tar.gz", "pets.tar.xz", "pets.zip"):
        for top in (None, "pets"):  # the layout at the top, or inside one folder
            packed = pack(root, tmp_path / "archives" / (top or "flat") / archive, top)
            again = load_dataset(str(packed), tmp_path / "data")
            assert again.classes == dataset.classes, (archive, top)
            for split in ("train", "val", "test"):
                assert same_split(getattr(again, split), getattr(dataset, split)), (archive, top, split)


def test_class_folders_inside_one_folder(tmp_path):
    write_layout(tmp_path / "download" / "pets", {"": 4})  # as `unzip pets.zip` leaves it
    dataset = load_dataset(str(tmp_path / "download"), tmp_path / "data")
    assert dataset.classes == list(PETS) and (len(dataset.train), len(dataset.test)) == (9, 3)


def pixels_of(split) -> set[bytes]:
    return {image.tobytes() for image in split.images}


def test_test_split_is_carved_stratified_and_seeded(tmp_path):
    root = write_layout(tmp_path / "pets", {"": 10})
    data = tmp_path / "data"
    dataset = load_dataset(str(root), data)
    assert np.bincount(dataset.test.labels).tolist() == [2, 2, 2]  # test_size 0.2 of every class
    assert np.bincount(dataset.train.labels).tolist() == [8, 8, 8]
    train, test = pixels_of(dataset.train), pixels_of(dataset.test)
    assert len(train | test) == 30 and not train & test  # every image once
    by_class = [{to_model_input(decode_image(path)).tobytes() for path in (root / name).iterdir()} for name in PETS]
    for split in (dataset.train, dataset.test):  # and with its own class
        assert all(image.tobytes() in by_class[label] for image, label in zip(split.images, split.labels))

    again = load_dataset(str(root), data)
    assert same_split(again.test, dataset.test) and same_split(again.train, dataset.train)
    other_seed = load_dataset(str(root), data, split_seed=1)
    assert np.bincount(other_seed.test.labels).tolist() == [2, 2, 2]
    assert pixels_of(other_seed.test) != test
    assert np.bincount(load_dataset(str(root), data, test_size=9).test.labels).tolist() == [3, 3, 3]
    assert np.bincount(load_dataset(str(root), data, test_size=0.5).test.labels).tolist() == [5, 5, 5]
    with pytest.raises(ConfigError, match=r"test size 2.5 is neither a fraction below 1 \(0.1\) nor a whole count"):
        load_dataset(str(root), data, test_size=2.5)
    with pytest.raises(ConfigError, match=r"test size 30 must be smaller than the dataset pets \(30 images\)"):
        load_dataset(str(root), data, test_size=30)


def test_carved_test_split_leaves_every_class_on_both_sides(tmp_path):
    root = tmp_path / "uneven"
    for name, n in (("cat", 10), ("dog", 4), ("fox", 2)):
        write_layout(root, {"": n}, classes=[name], seed=n)
    dataset = load_dataset(str(root), tmp_path / "data")
    # 0.2 of 16 is 3 images, which would leave fox (2 images) without a test image: it gets one.
    assert np.bincount(dataset.test.labels).tolist() == [2, 1, 1]
    assert np.bincount(dataset.train.labels).tolist() == [8, 3, 1]


def test_a_new_test_size_is_carved_from_the_cache(tmp_path):
    root = write_layout(tmp_path / "pets", {"": 10})
    data = tmp_path / "data"
    load_dataset(str(root), data)
    [cache] = cache_files(data)
    with np.load(cache) as z:
        arrays = dict(z)
    arrays["images"][:] = 7  # if a load returns these, it read the cache rather than decoding
    np.savez(cache, **arrays)
    for test_size, seed in ((0.5, 0), (3, 4)):
        dataset = load_dataset(str(root), data, test_size=test_size, split_seed=seed)
        assert np.all(dataset.train.images == 7) and np.all(dataset.test.images == 7)
    assert cache_files(data) == [cache]


def test_photos_are_prepared_as_predict_prepares_them(tmp_path):
    root = write_layout(tmp_path / "pets", {"": 4})
    data = tmp_path / "data"
    photos = sorted(root.rglob("*.png"))
    prepared = {}
    for crop in (True, False):
        dataset = load_dataset(str(root), data, center_crop=crop)
        everything = np.concatenate([dataset.train.images, dataset.test.images])
        for path in photos:  # 40x30: cropped to 30x30 (or squashed), then downscaled to 32x32
            expected = to_model_input(decode_image(path), size=32, crop=crop)
            assert (everything == expected).all(axis=(1, 2, 3)).sum() == 1, (path, crop)
        prepared[crop] = everything
    assert not np.array_equal(prepared[True], prepared[False])
    names = [p.name for p in cache_files(data)]
    assert len(names) == 2 and sum(name.endswith("-squashed.npz") for name in names) == 1


# --- layout errors of class folders, and archives ------------------------------------------------


def break_classes_empty(root):
    for f in (root / "dog").iterdir():
        f.unlink()
    return r"empty class folder\(s\), every class needs images: dog$"


def break_classes_single(root):
    for name in ("dog", "fox"):
        for f in (root / name).iterdir():
            f.unlink()
        (root / name).rmdir()
    return r"a single class \(cat/\); a classifier needs at least 2 classes, each in its own folder"


def break_classes_too_small(root):
    for name in ("dog", "fox"):
        for f in sorted((root / name).iterdir())[1:]:
            f.unlink()
    return (r"2 class\(es\) too small to split into training and test images \(each class needs at least 2\): "
            r"dog \(1 image\); fox \(1 image\); add images, or give train/ and test/ folders")


def break_classes_loose_image(root):
    (root / "stray.png").write_bytes(encode(solid(COLORS["red"]), "PNG"))
    (root / "notes.md").write_text("documentation: ignored")
    return r"1 file\(s\) beside the class folders, outside any class folder .*: stray.png$"


def break_classes_not_images(root):
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "fox" / "empty.jpg").write_bytes(b"")
    return r"2 file\(s\) in class folders are not readable images.*cat/notes.txt: not an image.*fox/empty.jpg: the file is empty"


def break_classes_none(root):
    for name in PETS:
        for f in (root / name).iterdir():
            f.unlink()
        (root / name).rmdir()
    return r"no class folders found; an image-folder dataset is <class>/<image>, or train/<class>/<image>"


CLASS_BREAKAGES = [break_classes_empty, break_classes_single, break_classes_too_small, break_classes_loose_image,
                   break_classes_not_images, break_classes_none]


@pytest.mark.parametrize("breakage", CLASS_BREAKAGES, ids=lambda f: f.__name__.removeprefix("break_classes_"))
@pytest.mark.parametrize("form", ["folder", "tar.xz", "zip"])
def test_bad_class_folders_are_a_named_error(tmp_path, breakage, form):
    root = write_layout(tmp_path / "pets", {"": 3})
    message = breakage(root)
    source = root if form == "folder" else pack(root, tmp_path / f"pets.{form}", folder_entries=True)
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(source), data_dir)
    assert cache_files(data_dir) == []


def test_plain_tar_is_refused_with_the_reason(tmp_path):
    archive = tmp_path / "pets.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(write_layout(tmp_path / "pets", {"": 3}), arcname=".")
    with pytest.raises(DatasetError, match=r"a plain .tar is not accepted: a cut-off .tar reads as a complete, "
                                           r"shorter one.*Compress it \(gzip pets.tar makes a .tar.gz"):
        load_dataset(str(archive), tmp_path / "data")


@pytest.mark.parametrize("kind", ["tar.xz", "zip"])
def test_cut_off_xz_or_zip_never_loads_with_images_missing(tmp_path, kind):
    archive = pack(write_layout(tmp_path / "pets", {"": 3}), tmp_path / f"pets.{kind}")
    whole = archive.read_bytes()
    assert len(load_dataset(str(archive), tmp_path / "data").train) == 6
    reader = "tar" if kind == "tar.xz" else "zip"
    for cut in (5, 200, 700, len(whole) // 2):
        archive.write_bytes(whole[:-cut])
        with pytest.raises(DatasetError, match=rf"could not be read as a {reader} archive"):
            load_dataset(str(archive), tmp_path / "data")


def test_damaged_zip_member_fails_its_crc(tmp_path):
    root = write_layout(tmp_path / "pets", {"": 3})
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # stored: the PNG bytes as they are
        for path in sorted(root.rglob("*.png")):
            zf.write(path, path.relative_to(root).as_posix())
    data = bytearray(archive.read_bytes())
    at = data.index(b"IDAT") + 20  # a pixel byte of the first PNG
    data[at] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"could not be read as a zip archive \(Bad CRC-32 for file 'cat/00.png'\)"):
        load_dataset(str(archive), tmp_path / "data")


def test_zip_bomb_is_refused_from_its_declared_sizes(tmp_path, monkeypatch):
    """A few KB of .zip whose one member declares (and holds) far more than the per-file limit:
    refused before any member is read."""
    from cifar100.data import image_folder

    monkeypatch.setattr(image_folder, "MAX_MEMBER_BYTES", 1 << 20)
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cat/0.png", encode(solid(COLORS["red"]), "PNG"))
        zf.writestr("dog/huge.png", bytes(8 << 20))  # zeros: compress to almost nothing
    assert archive.stat().st_size < 64 << 10

    def never(*args, **kwargs):
        raise AssertionError("a member was read before the sizes were checked")

    monkeypatch.setattr(zipfile.ZipFile, "read", never)
    with pytest.raises(DatasetError, match=r"dog/huge.png \(8,388,608 bytes\) takes the archive past the limits"):
        load_dataset(str(archive), tmp_path / "data")


def test_links_in_an_archive_are_a_named_error(tmp_path):
    """GNU tar (and tarfile) store a file met twice as a hard link to the first copy: read as
    nothing, the image would go missing and the class counts change unnoticed."""
    root = make_folder(tmp_path / "colors")
    os.link(root / "train" / "red" / "0.png", root / "train" / "red" / "copy.png")
    (root / "test" / "blue" / "alias.png").symlink_to("0.png")
    # At the top and no image: skipped as documentation, in the archive and (dangling) in the folder.
    (root / "NOTES").symlink_to("README.md")
    archive = tar_folder(root, tmp_path / "colors.tar.gz")
    with pytest.raises(DatasetError) as raised:
        load_dataset(str(archive), tmp_path / "data")
    message = str(raised.value)
    assert "2 archive member(s) in class folders are not regular files" in message
    assert "test/blue/alias.png (a symbolic link to 0.png); train/red/copy.png (a hard link to train/red/0.png)" in message
    assert "tar --hard-dereference --dereference" in message and "extract it and pass the folder" in message
    assert cache_files(tmp_path / "data") == []

    # Either fix the message names reads every image, the linked ones too.
    dereferenced = tmp_path / "dereferenced.tar.gz"
    with tarfile.open(dereferenced, "w:gz", dereference=True) as tar:
        tar.add(root / "train", arcname="train")
        tar.add(root / "test", arcname="test")
    for source in (dereferenced, root):
        dataset = load_dataset(str(source), tmp_path / "data")
        assert (len(dataset.train), len(dataset.test)) == (13, 10)


@pytest.mark.parametrize("name, message", [("pets.zip", "is not a zip archive"),
                                           ("pets.tar.xz", "is not an xz-compressed tar archive")])
def test_archive_of_another_kind(tmp_path, name, message):
    fake = tmp_path / name
    fake.write_bytes(b"\x1f\x8b" + bytes(100))  # gzip's magic, under another name
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(fake), tmp_path / "data")


# --- the cache ------------------------------------------------------------------------------


def test_second_load_comes_from_the_cache(tmp_path):
    root = make_folder(tmp_path / "colors")
    data_dir = tmp_path / "data"
    first = load_dataset(str(root), data_dir)
    [cache] = cache_files(data_dir)
    # Change the cached pixels: if the second load returns them, it read the cache, not the files.
    with np.load(cache) as z:
        arrays = dict(z)
    arrays["images"][arrays["splits"] == SPLITS.index("train")] = 7
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
    return r"2 file\(s\).*train/red/empty.jpg: the file is empty.*test/red/cut.png: the image is truncated or corrupt"


def break_missing_test(root):
    for f in sorted((root / "test").rglob("*"), reverse=True):
        f.rmdir() if f.is_dir() else f.unlink()
    (root / "test").rmdir()
    return r"train/ but no test/ split.*add test/<class>/<image>.*or use the <class>/<image> layout"


def break_class_mismatch(root):
    (root / "test" / "green").rename(root / "test" / "olive")
    return r"train/ and test/ must have the same class folders: green \(in train/; not in test/\); olive \(in test/; not in train/\)$"


def break_loose_file(root):
    (root / "train" / "stray.png").write_bytes(encode(solid(COLORS["red"]), "PNG"))
    return r"outside any class folder.*train/stray.png"


def break_missing_train(root):
    (root / "train").rename(root / "training")
    return r"no train/ split \(or it has no class folders\)"


def break_val_and_validation(root):
    for name in ("val", "validation"):
        (root / name / "red").mkdir(parents=True)
        (root / name / "red" / "0.png").write_bytes(encode(solid(COLORS["red"]), "PNG"))
    return (r"two folders for one split: val/ and validation/ \(both name the validation split: keep the one "
            r"that holds its images\)$")


def break_split_folder_case(root):
    (root / "Train" / "red").mkdir(parents=True)
    (root / "Train" / "red" / "9.png").write_bytes(encode(solid(COLORS["red"]), "PNG"))
    return r"two folders for one split: Train/ and train/ \(names that differ only in case: merge them into one train/ folder\)$"


def break_val_classes(root):
    for name in ("red", "green"):
        (root / "val" / name).mkdir(parents=True)
        (root / "val" / name / "0.png").write_bytes(encode(solid(COLORS[name]), "PNG"))
    return r"train/, val/ and test/ must have the same class folders: blue \(in train/, test/; not in val/\)$"


def break_single_class(root):
    for split in ("train", "test"):
        for name in ("green", "blue"):
            for f in (root / split / name).iterdir():
                f.unlink()
            (root / split / name).rmdir()
    return r"a single class \(train/red/, test/red/\); a classifier needs at least 2 classes"


def break_image_beside_splits(root):
    (root / "cover.jpg").write_bytes(encode(solid(COLORS["red"]), "JPEG"))
    return r"1 file\(s\) directly in a split folder or beside the class folders.*: cover.jpg$"


BREAKAGES = [break_empty_class, break_text_file, break_zero_bytes, break_missing_test,
             break_class_mismatch, break_loose_file, break_missing_train, break_val_and_validation,
             break_split_folder_case, break_val_classes, break_single_class, break_image_beside_splits]


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



def test_cifar10_jpegs_as_class_folders(tmp_path, cifar10_jpeg):
    """3 classes x 20 real JPEGs from the CIFAR-10 archive, as <class>/<image>: a carved 0.2 test
    split, and each image the JPEG's own 32x32 pixels."""
    root, taken = tmp_path / "cifar3", {}
    with tarfile.open(cifar10_jpeg, "r|gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or parts[0] != "train":
                continue
            if len(taken) == 3 and parts[1] not in taken or taken.get(parts[1], 0) == 20:
                continue
            taken[parts[1]] = taken.get(parts[1], 0) + 1
            (root / parts[1]).mkdir(parents=True, exist_ok=True)
            (root / parts[1] / parts[2]).write_bytes(tar.extractfile(member).read())
            if sum(taken.values()) == 60:
                break
    dataset = load_dataset(str(root), tmp_path / "data")
    assert dataset.classes == sorted(taken)
    assert np.bincount(dataset.train.labels).tolist() == [16] * 3 and np.bincount(dataset.test.labels).tolist() == [4] * 3
    for split in (dataset.train, dataset.test):
        for image, label in zip(split.images, split.labels):
            folder = root / dataset.classes[label]
            assert any(np.array_equal(image, np.asarray(Image.open(path).convert("RGB"))) for path in folder.iterdir())


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
