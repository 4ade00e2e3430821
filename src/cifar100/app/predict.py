"""Classify the images a user brings: files or folders of them, streamed through the model in
batches, each file decoded safely and preprocessed the way `images.to_model_input` does it.

A bad file (not an image, truncated, too many pixels, too many bytes) becomes a `Skipped`
record and the run goes on. When an image sits in a folder named after one of the model's
classes (`photos/apple/x.jpg`), that folder is its true label and the prediction is PASSED or
FAILED. Only one batch of decoded images is in memory at a time; what is kept per image after
its batch is a few numbers (and, for the gallery, two small thumbnails of the first images).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from cifar100.errors import ImageError
from cifar100.data.images import DEFAULT_MAX_PIXELS, decode_image, image_suffixes, to_model_input
from cifar100.inference import LoadedModel

# decode_image bounds the pixels; this bounds the bytes. A file this large is no photo (a
# 50-megapixel 16-bit PNG stays below it), and its size alone says so, before any decoding.
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024
# Side of the original-image thumbnail kept for the gallery.
THUMBNAIL_SIDE = 96


def readable_suffixes() -> frozenset[str]:
    """File name endings of every format this Pillow can open (not the save-only ones)."""
    return image_suffixes()


@dataclass
class Prediction:
    path: Path
    classes: list[str]  # top-k, most probable first
    probabilities: list[float]
    label: str | None  # the true class, from the folder name, when there is one
    label_rank: int | None  # 1-based rank of the true class among all classes
    model_input: np.ndarray  # uint8 (32, 32, 3): exactly what the model saw
    thumbnail: np.ndarray | None = None  # uint8 (h, w, 3), for the gallery

    @property
    def passed(self) -> bool | None:
        return None if self.label is None else self.label_rank == 1


@dataclass
class Skipped:
    path: Path
    reason: str


@dataclass
class Summary:
    classified: int = 0
    skipped: int = 0
    labelled: int = 0
    correct: int = 0  # top-1
    correct_top_k: int = 0
    top_k: int = 5

    def add(self, item: Prediction | Skipped) -> None:
        if isinstance(item, Skipped):
            self.skipped += 1
            return
        self.classified += 1
        if item.label is not None:
            self.labelled += 1
            self.correct += item.label_rank == 1
            self.correct_top_k += item.label_rank <= self.top_k

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def top_k_accuracy(self) -> float | None:
        return self.correct_top_k / self.labelled if self.labelled else None

    def describe(self) -> str:
        line = f"{self.classified} image(s) classified, {self.skipped} skipped"
        if self.labelled:
            line += (
                f". Labelled by folder: {self.labelled}; PASSED (top-1) {self.correct}/{self.labelled} = "
                f"{100 * self.accuracy:.1f}%, top-{self.top_k} {self.correct_top_k}/{self.labelled} = "
                f"{100 * self.top_k_accuracy:.1f}%"
            )
        return line

    def as_dict(self) -> dict:
        return {
            "classified": self.classified,
            "skipped": self.skipped,
            "labelled": self.labelled,
            "passed": self.correct,
            "accuracy": self.accuracy,
            f"top_{self.top_k}_accuracy": self.top_k_accuracy,
        }


def find_images(paths: Iterable[str | Path]) -> tuple[list[Path], list[Skipped]]:
    """Every file named directly, plus every file with an image suffix under each folder
    (recursively, hidden files and folders left out), in a stable sorted order. A path that
    does not exist is reported, not fatal."""
    suffixes = readable_suffixes()
    found: list[Path] = []
    missing: list[Skipped] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and Path(name).suffix.lower() in suffixes:
                        found.append(Path(root) / name)
        elif path.exists():
            # Named explicitly, so it is tried whatever its suffix: content decides.
            found.append(path)
        else:
            missing.append(Skipped(path, "no such file or folder"))
    return found, missing


def _class_key(name: str) -> str:
    # "maple tree", "Maple-Tree" and "maple_tree" name the same folder.
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def label_from_folder(path: Path, classes: Sequence[str]) -> str | None:
    """The class named by the image's parent folder, or None when the folder names no class."""
    lookup = {_class_key(c): c for c in classes}
    return lookup.get(_class_key(path.parent.name))


def _thumbnail(img: Image.Image) -> np.ndarray:
    small = img.copy()
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.uint8)


def decode_files(
    files: Iterable[Path],
    *,
    crop: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> Iterator[tuple[Path, tuple[Image.Image, np.ndarray] | ImageError]]:
    """(path, (decoded image, 32x32 model input)) per file, or (path, the ImageError saying
    why it cannot be used), one file at a time."""
    for path in files:
        result: tuple[Image.Image, np.ndarray] | ImageError
        try:
            size = path.stat().st_size
            if size > max_file_bytes:
                raise ImageError(
                    f"the file is {size / 2**20:.0f} MiB, more than the limit of "
                    f"{max_file_bytes / 2**20:.0f} MiB for one image"
                )
            img = decode_image(path, max_pixels=max_pixels)
            result = (img, to_model_input(img, size=32, crop=crop))
            del img
        except ImageError as exc:
            # The report names the file in its own column; the reason need not repeat it.
            result = ImageError(str(exc).removeprefix(f"{path}: "))
        except OSError as exc:  # unreadable: permissions, a folder that vanished mid-run
            result = ImageError(f"cannot read it ({exc.strerror or exc})")
        yield path, result
        del result  # hold no full-size image while the next file is decoded


def predict_files(
    model: LoadedModel,
    files: Iterable[Path],
    *,
    top_k: int = 5,
    crop: bool = True,
    batch_size: int = 64,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    thumbnails_for: int = 0,
) -> Iterator[Prediction | Skipped]:
    """Yield one Prediction or Skipped per file, in the order given. Files are decoded and
    classified `batch_size` at a time. The first `thumbnails_for` predictions carry a
    thumbnail of the original image (for the gallery)."""
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    top_k = min(top_k, len(model.classes))
    class_index = {c: i for i, c in enumerate(model.classes)}
    pending: list[Prediction | Skipped] = []
    inputs: list[np.ndarray] = []
    thumbnails_left = thumbnails_for

    def flush() -> Iterator[Prediction | Skipped]:
        if inputs:
            probs = model.probabilities(np.stack(inputs), batch_size=batch_size)
            order = np.argsort(-probs, axis=1, kind="stable")
            row = 0
            for item in pending:
                if isinstance(item, Prediction):
                    best = order[row, :top_k]
                    item.classes = [model.classes[i] for i in best]
                    item.probabilities = [float(probs[row, i]) for i in best]
                    if item.label is not None:
                        rank = np.flatnonzero(order[row] == class_index[item.label])[0]
                        item.label_rank = int(rank) + 1
                    row += 1
        yield from pending
        pending.clear()
        inputs.clear()

    for path, decoded in decode_files(files, crop=crop, max_pixels=max_pixels, max_file_bytes=max_file_bytes):
        if isinstance(decoded, ImageError):
            pending.append(Skipped(path, str(decoded)))
        else:
            img, model_input = decoded
            thumb = None
            if thumbnails_left > 0:
                thumb = _thumbnail(img)
                thumbnails_left -= 1
            label = label_from_folder(path, model.classes)
            pending.append(Prediction(path, [], [], label, None, model_input, thumb))
            inputs.append(model_input)
            del img, decoded  # the full-size decode is the large thing; drop it before the next file
        if len(inputs) >= batch_size:
            yield from flush()
    yield from flush()


# ---- output formats -------------------------------------------------------------------------


def prediction_record(item: Prediction | Skipped) -> dict:
    """One image as plain JSON data."""
    if isinstance(item, Skipped):
        return {"path": str(item.path), "error": item.reason}
    return {
        "path": str(item.path),
        "top_k": [{"class": c, "probability": round(p, 6)} for c, p in zip(item.classes, item.probabilities)],
        "label": item.label,
        "label_rank": item.label_rank,
        "result": None if item.passed is None else ("PASSED" if item.passed else "FAILED"),
    }


def write_json_report(out, model: LoadedModel, records: list[dict], summary: Summary, crop: bool) -> None:
    """records: from `prediction_record`, classified and skipped files mixed, in order."""
    report = {
        "checkpoint": str(model.checkpoint_path),
        "crop": crop,
        "top_k": summary.top_k,
        "images": [r for r in records if "error" not in r],
        "skipped": [r for r in records if "error" in r],
        "summary": summary.as_dict(),
    }
    json.dump(report, out, indent=2)
    out.write("\n")


class CsvWriter:
    """One row per file, written as each batch finishes: path, label, result, then
    class/probability pairs for ranks 1..k, and the reason a skipped file was skipped."""

    def __init__(self, out, top_k: int):
        self.top_k = top_k
        self.writer = csv.writer(out, lineterminator="\n")
        header = ["path", "label", "result"]
        for rank in range(1, top_k + 1):
            header += [f"class_{rank}", f"probability_{rank}"]
        self.writer.writerow(header + ["error"])

    def write(self, item: Prediction | Skipped) -> None:
        if isinstance(item, Skipped):
            self.writer.writerow([str(item.path), "", "SKIPPED"] + [""] * (2 * self.top_k) + [item.reason])
            return
        result = "" if item.passed is None else ("PASSED" if item.passed else "FAILED")
        row = [str(item.path), item.label or "", result]
        for rank in range(self.top_k):
            if rank < len(item.classes):
                row += [item.classes[rank], f"{item.probabilities[rank]:.6f}"]
            else:
                row += ["", ""]
        self.writer.writerow(row + [""])


@dataclass
class TableWriter:
    """A fixed-width text table, one row per file, printed as each batch finishes. Column
    widths come from the list of files found up front, so rows line up while streaming."""

    out: object
    paths: Sequence[Path]
    classes: Sequence[str]
    top_k: int
    labelled: bool
    _path_width: int = field(init=False)
    _cell_width: int = field(init=False)

    def __post_init__(self) -> None:
        longest = max((len(str(p)) for p in self.paths), default=5)
        self._path_width = min(max(longest, 5), 60)
        self._cell_width = max(len(c) for c in self.classes) + 7  # "name  99.9%"
        header = f"{'image':<{self._path_width}}"
        if self.labelled:
            header += f"  {'label':<{self._cell_width - 7}}  {'result':<7}"
        header += "".join(f"  {('top-' + str(r)):<{self._cell_width}}" for r in range(1, self.top_k + 1))
        self.out.write(header.rstrip() + "\n")
        self.out.write("-" * len(header.rstrip()) + "\n")

    def _path_cell(self, path: Path) -> str:
        text = str(path)
        if len(text) > self._path_width:
            text = "..." + text[-(self._path_width - 3) :]
        return f"{text:<{self._path_width}}"

    def write(self, item: Prediction | Skipped) -> None:
        line = self._path_cell(item.path)
        if isinstance(item, Skipped):
            self.out.write(f"{line}  SKIPPED: {item.reason}\n")
            return
        if self.labelled:
            result = "" if item.passed is None else ("PASSED" if item.passed else "FAILED")
            line += f"  {(item.label or '-'):<{self._cell_width - 7}}  {result:<7}"
        for name, p in zip(item.classes, item.probabilities):
            cell = f"{name} {100 * p:5.1f}%"
            line += f"  {cell:<{self._cell_width}}"
        self.out.write(line.rstrip() + "\n")


def gallery_arrays(predictions: Sequence[Prediction]):
    """The plain lists `plots.plot_prediction_gallery_user` takes, from predictions."""
    originals = [p.thumbnail if p.thumbnail is not None else p.model_input for p in predictions]
    model_inputs = [p.model_input for p in predictions]
    names = ["/".join(p.path.parts[-2:]) for p in predictions]  # folder/file: the label shows
    top_classes = [p.classes[:3] for p in predictions]
    top_probabilities = [p.probabilities[:3] for p in predictions]
    labels = [p.label for p in predictions]
    return originals, model_inputs, names, top_classes, top_probabilities, labels
