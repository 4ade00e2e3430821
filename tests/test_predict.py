"""`cifar100 predict`: real CIFAR-10 photos through a model trained in the session (smoke_run),
every image kind the issue lists, bad files skipped, the user-visible preprocessing, the three
output formats and the gallery."""

from __future__ import annotations

import csv
import io
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar100.data.sources import load_dataset
from cifar100.inference import load_model
from cifar100.app.predict import Skipped, find_images, label_from_folder, predict_files
from run_fixtures import run_cli


@pytest.fixture(scope="module")
def model(smoke_run):
    return load_model(smoke_run)


def png_with_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, with a token IDAT: a
    decompression bomb as far as the header is concerned."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def write_odd_images(folder: Path, photo: Image.Image) -> tuple[list[str], dict[str, str]]:
    """Every kind of image the issue lists, made from one real photo, in `folder`; and bad
    files with the words their skip reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    big = photo.resize((480, 320), Image.Resampling.BICUBIC)  # large and not square
    gray16 = (np.asarray(big.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    rgba = big.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(big.size))
    frames = [big, big.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    good = {
        "photo.jpg": lambda p: big.save(p, quality=90),
        "gray16.png": lambda p: Image.fromarray(gray16).save(p),
        "palette.png": lambda p: big.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(p),
        "alpha.png": lambda p: rgba.save(p),
        "gray_alpha.png": lambda p: rgba.convert("LA").save(p),
        "photo.webp": lambda p: big.save(p, quality=85),
        "photo.bmp": lambda p: big.save(p),
        "animated.gif": lambda p: frames[0].save(p, save_all=True, append_images=frames[1:], duration=100),
        "grayscale.jpg": lambda p: big.convert("L").save(p),
        "cmyk.jpg": lambda p: big.convert("CMYK").save(p),
        "photo.tiff": lambda p: big.save(p),
        "no_suffix_given_but_png.png": lambda p: big.save(p, format="PNG"),
    }
    for name, save in good.items():
        save(folder / name)
    jpeg = (folder / "photo.jpg").read_bytes()
    bad = {
        "notes.jpg": ("this is text, not a picture\n".encode(), "not an image"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        # Pillow refuses this from its header; the reason is in the project's words, not Pillow's.
        "bomb.png": (png_with_header_only(100_000, 100_000),
                     "too many pixels to decode safely: its header claims 10,000,000,000, more than the limit of"),
        "empty.png": (b"", "empty"),
    }
    for name, (data, _) in bad.items():
        (folder / name).write_bytes(data)
    return sorted(good), {name: words for name, (_, words) in bad.items()}


@pytest.fixture(scope="module")
def photo(cifar10_small_folder) -> Image.Image:
    return Image.open(sorted((cifar10_small_folder / "test" / "cat").glob("*.jpg"))[0]).convert("RGB")


def test_predict_on_real_photos_is_above_chance_and_matches_the_dataset_pipeline(smoke_run, cifar10_small_folder, model):
    test_dir = cifar10_small_folder / "test"
    result = run_cli("predict", smoke_run, test_dir, "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    images = report["images"]
    n = len(list(test_dir.rglob("*.jpg")))
    assert len(images) == n and report["skipped"] == []
    summary = report["summary"]
    assert summary["classified"] == n and summary["labelled"] == n

    # Every image is labelled by its folder, and PASSED means exactly "top-1 is the label".
    for record in images:
        assert record["label"] == Path(record["path"]).parent.name
        probs = [entry["probability"] for entry in record["top_k"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
        assert record["result"] == ("PASSED" if record["top_k"][0]["class"] == record["label"] else "FAILED")
    passed = sum(r["result"] == "PASSED" for r in images)
    assert summary["accuracy"] == pytest.approx(passed / n)

    # Ten classes: chance is 10%. Demand three standard deviations above it.
    chance = 1 / len(model.classes)
    assert summary["accuracy"] > chance + 3 * math.sqrt(chance * (1 - chance) / n)

    # The same files through the dataset reader give the same accuracy: for a 32x32 JPEG the
    # predict preprocessing is the identity, so predict and evaluation see the same pixels.
    config = json.loads((smoke_run / "config.json").read_text())
    dataset = load_dataset(config["dataset"]["spec"], config["dataset"]["data_dir"], download=False, quiet=True)
    reference = (model.probabilities(dataset.test.images).argmax(1) == dataset.test.labels).mean()
    assert summary["accuracy"] == pytest.approx(float(reference), abs=1e-12)


def test_every_image_kind_is_classified_and_every_bad_file_skipped_with_its_reason(smoke_run, photo, tmp_path):
    folder = tmp_path / "photos" / "cat"
    good, bad = write_odd_images(folder, photo)
    # One bad file named directly (tried whatever its suffix) and a path that does not exist.
    stray = tmp_path / "stray.dat"
    stray.write_bytes(b"\x00\x01binary junk")
    result = run_cli("predict", smoke_run, tmp_path / "photos", stray, tmp_path / "missing.jpg", "--json", "--batch-size", "4")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    classified = {Path(r["path"]).name for r in report["images"]}
    assert classified == set(good)
    assert all(r["label"] == "cat" and r["result"] in ("PASSED", "FAILED") for r in report["images"])
    reasons = {Path(r["path"]).name: r["error"] for r in report["skipped"]}
    assert set(reasons) == set(bad) | {"stray.dat", "missing.jpg"}
    for name, words in bad.items():
        assert words in reasons[name], (name, reasons[name])
    assert "no such file" in reasons["missing.jpg"] and "not an image" in reasons["stray.dat"]
    assert "decompression bomb" not in reasons["bomb.png"]
    assert report["summary"]["skipped"] == len(bad) + 2


def test_preprocessing_is_a_centre_crop_or_a_squash_and_uses_the_first_gif_frame(model, tmp_path):
    # Red | blue | red, each third a square: the centre crop is all blue; squashing keeps the
    # red thirds. A two-frame GIF, green then red: the first frame is the one classified.
    wide = np.zeros((200, 600, 3), np.uint8)
    wide[:, :200, 0] = wide[:, 400:, 0] = 255
    wide[:, 200:400, 2] = 255
    Image.fromarray(wide).save(tmp_path / "wide.png")
    frames = [Image.new("RGB", (64, 64), c) for c in ((0, 255, 0), (255, 0, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    files = [tmp_path / "wide.png", tmp_path / "anim.gif"]

    cropped, gif = list(predict_files(model, files, crop=True))
    # The outermost columns may pick up a trace of the neighbouring red (the Lanczos kernel
    # reaches past the crop box); everything inside is the blue centre.
    inner = cropped.model_input[:, 1:-1]
    assert (inner[..., 2] > 250).all() and (inner[..., 0] < 5).all()
    assert cropped.model_input[..., 0].max() < 40
    assert gif.model_input[..., 1].min() > 240 and gif.model_input[..., 0].max() < 15
    squashed = next(predict_files(model, files[:1], crop=False))
    left, centre = squashed.model_input[:, :8], squashed.model_input[:, 13:19]
    assert left[..., 0].min() > 240 and left[..., 2].max() < 15
    assert centre[..., 2].min() > 240 and centre[..., 0].max() < 15
    # The probabilities are the model's on exactly that input.
    expected = model.probabilities(cropped.model_input[None])[0]
    assert cropped.probabilities[0] == pytest.approx(float(expected.max()), abs=1e-6)


def test_files_are_streamed_one_batch_at_a_time(model, cifar10_small_folder):
    files = sorted((cifar10_small_folder / "test" / "ship").glob("*.jpg"))[:20]
    consumed = []

    def lazily():
        for path in files:
            consumed.append(path)
            yield path

    stream = predict_files(model, lazily(), batch_size=4)
    first = next(stream)
    # The first answer arrives after one batch has been read, not after every file.
    assert first.path == files[0] and len(consumed) == 4
    rest = list(stream)
    assert [p.path for p in [first, *rest]] == files and len(consumed) == 20


def test_files_over_the_byte_limit_are_skipped_before_decoding(model, cifar10_small_folder):
    files = sorted((cifar10_small_folder / "test" / "frog").glob("*.jpg"))[:3]
    limit = max(f.stat().st_size for f in files) - 1
    results = list(predict_files(model, files, max_file_bytes=limit))
    skipped = {r.path for r in results if isinstance(r, Skipped)}
    assert skipped == {f for f in files if f.stat().st_size > limit} and len(skipped) >= 1
    assert all("more than the limit" in r.reason for r in results if isinstance(r, Skipped))


def test_table_and_csv_outputs(smoke_run, cifar10_small_folder, tmp_path):
    photos = tmp_path / "photos"
    for cls in ("cat", "ship"):
        (photos / cls).mkdir(parents=True)
        for src in sorted((cifar10_small_folder / "test" / cls).glob("*.jpg"))[:3]:
            (photos / cls / src.name).write_bytes(src.read_bytes())
    (photos / "cat" / "broken.jpg").write_bytes(b"not a jpeg")

    table = run_cli("predict", smoke_run, "photos", "--top-k", "3", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["image", "label", "result", "top-1", "top-2", "top-3"]
    rows = [line for line in lines[2:] if line.startswith("photos/")]
    assert len(rows) == 7
    assert sum(("PASSED" in r) or ("FAILED" in r) for r in rows) == 6
    assert any("broken.jpg" in r and "SKIPPED" in r and "not an image" in r for r in rows)
    assert "6 image(s) classified, 1 skipped" in lines[-1] and "PASSED (top-1)" in lines[-1]

    out = run_cli("predict", smoke_run, photos, "--csv", "--top-k", "2")
    assert out.returncode == 0, out.stderr
    records = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(records[0]) == ["path", "label", "result", "class_1", "probability_1", "class_2", "probability_2", "error"]
    assert len(records) == 7
    skipped = [r for r in records if r["result"] == "SKIPPED"]
    assert len(skipped) == 1 and "not an image" in skipped[0]["error"]
    for r in records:
        if r["result"] != "SKIPPED":
            assert r["label"] in ("cat", "ship") and float(r["probability_1"]) >= float(r["probability_2"])
    assert "6 image(s) classified" in out.stderr


def test_gallery_shows_each_image_with_a_fixed_size(smoke_run, photo, tmp_path):
    folder = tmp_path / "photos" / "cat"
    write_odd_images(folder, photo)
    gallery = tmp_path / "gallery.png"
    result = run_cli("predict", smoke_run, folder, "--gallery", gallery, "--gallery-max", "5", "--csv")
    assert result.returncode == 0, result.stderr
    assert "gallery of 5 image(s) (the first 5 of 12)" in result.stderr
    with Image.open(gallery) as img:
        # 2 columns x 3 rows of 6.4 x 1.9 inch cells plus a 0.6 inch title, at 100 dpi.
        assert img.size == (1280, 630)
        pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 20  # pictures and bars, not an empty canvas


def test_labels_come_from_folders_named_after_classes():
    classes = ["apple", "maple_tree", "aquarium_fish"]
    assert label_from_folder(Path("photos/apple/x.jpg"), classes) == "apple"
    assert label_from_folder(Path("photos/Maple Tree/x.jpg"), classes) == "maple_tree"
    assert label_from_folder(Path("photos/maple tree/x.jpg"), classes) == "maple_tree"
    assert label_from_folder(Path("photos/Maple-Tree/x.jpg"), classes) == "maple_tree"
    assert label_from_folder(Path("photos/aquarium fish/x.jpg"), classes) == "aquarium_fish"
    assert label_from_folder(Path("photos/aquarium-fish/x.jpg"), classes) == "aquarium_fish"
    assert label_from_folder(Path("photos/holiday/x.jpg"), classes) is None


def test_folders_are_searched_recursively_for_image_suffixes_only(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.JPG", "a/b/y.png", "a/b/z.webp", "a/readme.txt", "a/.hidden.png"):
        (tmp_path / name).write_bytes(b"")
    found, missing = find_images([tmp_path / "a", tmp_path / "nope"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/x.JPG", "a/b/y.png", "a/b/z.webp"]
    assert [m.path.name for m in missing] == ["nope"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top-k", "0"], "--top-k must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_bad_options_are_named(smoke_run, cifar10_small_folder, args, message):
    result = run_cli("predict", smoke_run, cifar10_small_folder / "test" / "cat", *args)
    assert result.returncode == 2 and message in result.stderr


def test_no_images_and_no_model_are_clear_errors(smoke_run, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("predict", smoke_run, tmp_path / "empty")
    assert result.returncode == 2 and f"no image files found in {tmp_path / 'empty'}" in result.stderr
    result = run_cli("predict", smoke_run, tmp_path / "nonexistent.jpg")
    assert result.returncode == 2 and f"{tmp_path / 'nonexistent.jpg'} does not exist" in result.stderr
    assert "no image files found" not in result.stderr
    result = run_cli("predict", tmp_path / "no-such-run", tmp_path / "empty")
    assert result.returncode == 2 and "no run folder, checkpoint file or weights folder" in result.stderr
