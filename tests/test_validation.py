"""Every input a user gives `cifar100 train` is checked, through the real command line: a bad
setting or a bad dataset ends with exit code 2 and one line, `cifar100: error: ...`, that names
the problem; never a traceback, and nothing written. Images in unusual modes and sizes are
converted, not refused; an image that would take gigabytes to decode is refused by its header.

tests/test_train.py::test_bad_settings_are_refused_before_training already covers --epochs -1,
--batch-size 0, --lr 0, an unknown --preset and an unknown --set name; these extend it."""

from __future__ import annotations

import functools
import struct
import subprocess
import sys
import tarfile
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from run_fixtures import write_synthetic_folder

from cifar100.data.sources import load_dataset
from cifar100.data.images import decode_image, to_model_input

# The whole training run of a tiny folder: 4 classes, 10 train and 3 test images each.
TRAIN = ["train", "--preset", "smoke", "--epochs", "1", "--val-size", "8", "--quiet", "--no-evaluate"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return write_synthetic_folder(tmp_path_factory.mktemp("tiny"), train_per_class=10, test_per_class=3)


@pytest.fixture
def folder_copy(tmp_path, tiny_folder) -> Path:
    """A copy of the tiny folder to damage."""
    copy = tmp_path / "pictures"
    for source in tiny_folder.rglob("*.png"):
        target = copy / source.relative_to(tiny_folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    return copy


def train_cli(dataset: Path | str, work: Path, *flags: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run `python -m cifar100 train` and return its result and its peak memory in MiB. A fresh
    parent process runs it, so RUSAGE_CHILDREN holds this command's peak alone (the test
    process's own figure would be the largest child any earlier test started)."""
    parent = textwrap.dedent(
        """
        import resource, subprocess, sys
        result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
        sys.exit(result.returncode)
        """
    )
    command = [sys.executable, "-m", "cifar100", *TRAIN, "--dataset", str(dataset),
               "--data-dir", str(work / "data"), "--out", str(work / "run"), *flags]
    result = subprocess.run([sys.executable, "-c", parent, *command], capture_output=True, text=True, timeout=300)
    *output, peak = result.stdout.splitlines()
    result.stdout = "\n".join(output)
    return result, int(peak)


def assert_refused(result: subprocess.CompletedProcess, work: Path, message: str) -> None:
    """Exit code 2, one line of error output that starts with `cifar100: error:` and names the
    problem, no traceback, and no run folder."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cifar100: error: "), result.stderr
    assert message in lines[0], lines[0]
    assert not (work / "run").exists()


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "0"], "epochs must be at least 1, got 0"),
        (["--lr", "-0.1"], "learning rate must be a positive number, got -0.1"),
        (["--lr", "nan"], "learning rate must be a positive number, got nan"),
        (["--lr", "inf"], "learning rate must be a positive number, got inf"),
        (["--val-size", "-1"], "validation size must be >= 0, got -1"),
        (["--val-size", "2.5"], "validation size 2.5 is neither a fraction below 1 (0.1) nor a whole count (5000)"),
        (["--test-size", "0"], "test size must be a fraction in (0, 1) (0.2) or a whole count >= 1 (500), got 0"),
        (["--optimizer", "rmsprop"], "optimizer must be one of ('sgd', 'adam', 'adamw', 'muon'), got 'rmsprop'"),
        (["--set", "momentum=nan"], "momentum must be in [0, 1), got nan"),
        (["--set", "epochs=two"], "setting epochs='two' is not a valid int"),
        (["--set", "split_seed=-5"], "seeds must be >= 0, got seed=0, split_seed=-5"),
        (["--set", "model_kwargs=[32, 64]"], "model_kwargs must be a JSON object"),
        (["--set", 'model_kwargs={"depth": 3}'], "model_kwargs={'depth': 3} fails with TypeError"),
        (["--set", 'model_kwargs={"widths": [0, 0, 0]}'], "the model settings make no working stagenet"),
        (["--set", 'model_kwargs={"convs_per_stage": [2, 3]}'],
         "convs_per_stage must be >= 1, one count or one per stage (3), got [2, 3]"),
        (["--set", 'model_kwargs={"whiten_padding": "full"}'],
         "whitening padding must be 'valid' or 'same', got 'full'"),
        (["--optimizer", "muon", "--set", "muon_lr=0"], "muon_lr must be a positive number, got 0.0"),
        (["--tta"], "--tta is part of the final evaluation, which --no-evaluate skips"),  # TRAIN has --no-evaluate
    ],
    ids=["epochs-0", "lr-negative", "lr-nan", "lr-inf", "val-size-negative", "val-size-fractional-count",
         "test-size-zero", "optimizer", "momentum-nan",
         "set-not-a-number", "split-seed-negative", "model-kwargs-list", "model-kwargs-unknown", "model-widths-zero",
         "convs-per-stage-count", "whiten-padding", "muon-lr-zero", "tta-without-evaluation"],
)
def test_bad_settings_name_the_setting(tmp_path, tiny_folder, flags, message):
    result, _ = train_cli(tiny_folder, tmp_path, *flags)
    assert_refused(result, tmp_path, message)


def test_unknown_dataset(tmp_path):
    result, _ = train_cli("imagenet", tmp_path)
    assert_refused(result, tmp_path, "unknown dataset 'imagenet': use cifar100, cifar10, or the path of an image folder")


def test_validation_split_larger_than_the_training_set(tmp_path, tiny_folder):
    result, _ = train_cli(tiny_folder, tmp_path, "--val-size", "500")
    assert_refused(result, tmp_path, "validation size 500 must be smaller than the training set (40 images)")


# --- image folders ------------------------------------------------------------------------------


def test_classes_that_differ_between_train_and_test(tmp_path, folder_copy):
    (folder_copy / "test" / "blue").rename(folder_copy / "test" / "navy")
    result, _ = train_cli(folder_copy, tmp_path)
    assert_refused(result, tmp_path, "train/ and test/ must have the same class folders: "
                   "blue (in train/; not in test/); navy (in test/; not in train/)")


def test_zero_byte_image(tmp_path, folder_copy):
    (folder_copy / "test" / "green" / "empty.jpg").write_bytes(b"")
    result, _ = train_cli(folder_copy, tmp_path)
    assert_refused(result, tmp_path, "test/green/empty.jpg: the file is empty (0 bytes), not an image")


def test_images_of_other_modes_and_sizes_are_converted(tmp_path, folder_copy):
    """A 64x48 RGBA PNG and a 16-bit grayscale PNG among the 32x32 RGB ones: training runs, and
    the dataset holds them as 32x32 RGB (alpha on white, 16 bits scaled to 8)."""
    rgba = folder_copy / "train" / "red" / "logo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 4), dtype=np.uint8)).save(rgba)
    gray16 = folder_copy / "train" / "green" / "scan.png"
    Image.fromarray(np.full((20, 30), 40_000, dtype=np.uint16)).save(gray16)
    assert Image.open(rgba).mode == "RGBA" and Image.open(gray16).mode == "I;16"

    result, _ = train_cli(folder_copy, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and (tmp_path / "run" / "checkpoints" / "last.pt").is_file()

    dataset = load_dataset(str(folder_copy), tmp_path / "data")  # the cache the run wrote
    assert len(dataset.train) == 42
    images = dataset.train.images
    expected = to_model_input(decode_image(rgba))
    assert (images == expected).all(axis=(1, 2, 3)).sum() == 1
    assert (images == 156).all(axis=(1, 2, 3)).sum() == 1  # 40000 / 257, the same grey in R, G and B



def class_folders(root: Path, per_class: int = 4, classes=("cat", "dog", "fox")) -> Path:
    """<class>/<image> folders of 40x30 PNGs."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def empty_class(root: Path) -> tuple[Path, str]:
    (root / "wolf").mkdir()
    return root, "empty class folder(s), every class needs images: wolf"


def single_class(root: Path) -> tuple[Path, str]:
    for name in ("dog", "fox"):
        for f in (root / name).iterdir():
            f.unlink()
        (root / name).rmdir()
    return root, "a single class (cat/); a classifier needs at least 2 classes, each in its own folder"


def class_too_small(root: Path) -> tuple[Path, str]:
    for name in ("dog", "fox"):
        for f in sorted((root / name).iterdir())[1:]:
            f.unlink()
    return root, ("2 class(es) too small to split into training and test images (each class needs at least 2): "
                  "dog (1 image); fox (1 image)")


def not_images(root: Path) -> tuple[Path, str]:
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / "cut.png").write_bytes((root / "dog" / "0.png").read_bytes()[:100])
    return root, "2 file(s) in class folders are not readable images (delete or replace them): cat/notes.txt: "


def loose_image(root: Path) -> tuple[Path, str]:
    (root / "cat" / "0.png").rename(root / "0.png")
    return root, "1 file(s) beside the class folders, outside any class folder (move each into its class folder): 0.png"


def as_splits(root: Path, splits=("train", "test")) -> Path:
    """The class folders copied into each split folder of `splits`."""
    for split in splits:
        for f in sorted(root.glob("*/*.png")):
            target = root / split / f.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.read_bytes())
    for name in ("cat", "dog", "fox"):
        for f in (root / name).iterdir():
            f.unlink()
        (root / name).rmdir()
    return root


def loose_in_split(root: Path) -> tuple[Path, str]:
    as_splits(root)
    (root / "train" / "notes.txt").write_text("beside the class folders of train/")
    return root, "1 file(s) directly in a split folder or beside the class folders, outside any class folder"


def classes_differ(root: Path) -> tuple[Path, str]:
    as_splits(root, ("train", "validation", "test"))
    (root / "validation" / "fox").rename(root / "validation" / "wolf")
    return root, ("train/, validation/ and test/ must have the same class folders: fox (in train/, test/; not in "
                  "validation/); wolf (in validation/; not in train/, test/)")


def val_and_validation(root: Path) -> tuple[Path, str]:
    as_splits(root, ("train", "val", "validation", "test"))
    return root, "two folders for one split: val/ and validation/ (both name the validation split"


def train_without_test(root: Path) -> tuple[Path, str]:
    as_splits(root, ("train",))
    return root, ("train/ but no test/ split (or it has no class folders): add test/<class>/<image>, the images the "
                  "model is tested on, or use the <class>/<image> layout (no train/ level)")


def plain_tar(root: Path) -> tuple[Path, str]:
    archive = root.parent / "pets.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname="pets")
    return archive, "a plain .tar is not accepted: a cut-off .tar reads as a complete, shorter one"


@pytest.mark.parametrize("breakage", [empty_class, single_class, class_too_small, not_images, loose_image,
                                      loose_in_split, classes_differ, val_and_validation, train_without_test,
                                      plain_tar], ids=lambda f: f.__name__)
def test_bad_image_folder_layouts(tmp_path, breakage):
    source, message = breakage(class_folders(tmp_path / "pets"))
    result, _ = train_cli(source, tmp_path)
    assert_refused(result, tmp_path, message)


# --- decompression bombs --------------------------------------------------------------------------


@functools.cache
def bilevel_png(side: int) -> bytes:
    """A real, complete side x side black-and-white PNG (1 bit per pixel, all black): 30000 x
    30000 fits in 110 KB and decodes to 900 MB of pixels, 2.7 GB as RGB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (side + 7) // 8)  # filter byte, then the packed pixels
    packer = zlib.compressobj(9)
    pixels = b"".join(packer.compress(row * 1000) for _ in range(side // 1000)) + packer.compress(row * (side % 1000))
    pixels += packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "side, message",
    [
        (30_000, "train/red/poster.png: too many pixels to decode safely"),  # Pillow's own limit
        (8_000, "train/red/poster.png: 8000x8000 = 64,000,000 pixels is more than the limit of 50,000,000"),
    ],
    ids=["30000x30000", "8000x8000"],
)
def test_decompression_bomb_is_refused_from_its_header(tmp_path, folder_copy, side, message):
    bomb = bilevel_png(side)
    assert len(bomb) < 200_000
    (folder_copy / "train" / "red" / "poster.png").write_bytes(bomb)
    result, peak_mib = train_cli(folder_copy, tmp_path)
    assert_refused(result, tmp_path, message)
    assert peak_mib < 1536, f"peak memory {peak_mib} MiB"
