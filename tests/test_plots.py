"""The evaluation figures of plots.py: each is written as a PNG of its fixed pixel size, shows
what it promises where that can be read off the pixels (PASSED green, FAILED red), and bad
input is refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cifar100.evaluation import plots
from cifar100.evaluation.metrics import reliability


def png(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def pixels(size_inches) -> tuple[int, int]:
    """(height, width) in pixels of a figure of size_inches (width, height)."""
    return round(size_inches[1] * plots.DPI), round(size_inches[0] * plots.DPI)


def color_pixels(image: np.ndarray, hex_color: str, tolerance: int = 30) -> int:
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image.astype(int) - rgb).max(axis=2) <= tolerance).sum())


def history(epochs: int, with_val: bool = True) -> dict:
    e = np.arange(1, epochs + 1, dtype=float)
    nan = np.full(epochs, np.nan)
    return {
        "epoch": e, "train_acc": 1 - 0.9 * np.exp(-e / 3), "train_loss": 4 * np.exp(-e / 3),
        "val_acc": 0.6 - 0.5 * np.exp(-e / 3) if with_val else nan,
        "val_loss": 4 * np.exp(-e / 4) + 0.5 if with_val else nan,
        "lr": np.linspace(0.1, 0, epochs), "seconds": np.ones(epochs),
    }


def test_history_figure(tmp_path):
    image = png(plots.plot_history(history(12), tmp_path / "h.png", best_epoch=9))
    assert image.shape[:2] == pixels(plots.HISTORY_SIZE)
    # A run without a validation split still draws its training curves.
    image = png(plots.plot_history(history(3, with_val=False), tmp_path / "h2.png", best_epoch=3))
    assert image.shape[:2] == pixels(plots.HISTORY_SIZE)
    with pytest.raises(ValueError, match="no epochs"):
        plots.plot_history(history(0), tmp_path / "h3.png")


def test_history_comparison_figure(tmp_path):
    path = plots.plot_history_comparison({"fast": history(10), "keras-seed": history(4, with_val=False)}, tmp_path / "c.png")
    assert png(path).shape[:2] == pixels(plots.HISTORY_SIZE)
    with pytest.raises(ValueError, match="no runs"):
        plots.plot_history_comparison({}, tmp_path / "c2.png")


def test_confusion_matrices(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"class_{i}" for i in range(100)]
    confusion = rng.integers(0, 5, (100, 100)) + np.eye(100, dtype=int) * 60
    groups = [(f"super_{g}", 5) for g in range(20)]
    path = plots.plot_confusion_matrix(confusion, names, tmp_path / "c.png", order=np.arange(100)[::-1], groups=groups)
    assert png(path).shape[:2] == pixels(plots.CONFUSION_SIZE)
    path = plots.plot_confusion_matrix(confusion[:20, :20], names[:20], tmp_path / "s.png", size=plots.SUPERCLASS_CONFUSION_SIZE)
    assert png(path).shape[:2] == pixels(plots.SUPERCLASS_CONFUSION_SIZE)
    with pytest.raises(ValueError, match="does not match 99 class names"):
        plots.plot_confusion_matrix(confusion, names[:99], tmp_path / "bad.png")


def test_per_class_accuracy_colours_best_and_worst(tmp_path):
    accuracies = np.linspace(0.05, 0.95, 30)
    accuracies[3] = np.nan  # a class without test images is left out
    image = png(plots.plot_per_class_accuracy([f"c{i}" for i in range(30)], accuracies, tmp_path / "p.png"))
    assert image.shape[:2] == pixels(plots.PER_CLASS_SIZE)
    assert color_pixels(image, plots.PASSED_COLOR) > 1000 and color_pixels(image, plots.FAILED_COLOR) > 1000
    with pytest.raises(ValueError, match="no class has an accuracy"):
        plots.plot_per_class_accuracy(["a"], [np.nan], tmp_path / "bad.png")


def test_reliability_diagram(tmp_path):
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1, 500)
    rel = reliability(conf, rng.uniform(size=500) < conf)
    image = png(plots.plot_reliability_diagram(rel.edges, rel.confidence, rel.accuracy, rel.count, rel.ece, tmp_path / "r.png"))
    assert image.shape[:2] == pixels(plots.RELIABILITY_SIZE)


def test_gallery_marks_passed_green_and_failed_red(tmp_path):
    rng = np.random.default_rng(0)
    gray = np.full((32, 32, 3), 128, dtype=np.uint8)
    expected = pixels((plots.EVAL_GALLERY_GRID[1] * plots.EVAL_GALLERY_CELL[0],
                       plots.EVAL_GALLERY_GRID[0] * plots.EVAL_GALLERY_CELL[1] + plots.EVAL_GALLERY_HEADER))

    passed = png(plots.plot_prediction_gallery([gray] * 3, ["cat"] * 3, ["cat"] * 3, [0.9] * 3, tmp_path / "p.png"))
    failed = png(plots.plot_prediction_gallery([gray] * 3, ["cat"] * 3, ["dog"] * 3, [0.9] * 3, tmp_path / "f.png"))
    full = png(plots.plot_prediction_gallery(rng.integers(0, 255, (32, 32, 32, 3), dtype=np.uint8),
                                             ["a"] * 32, ["a", "b"] * 16, [0.5] * 32, tmp_path / "full.png"))
    # A model without mistakes still gets its (empty) gallery, at the same size.
    empty = png(plots.plot_prediction_gallery(np.zeros((0, 32, 32, 3), np.uint8), [], [], [], tmp_path / "e.png"))
    assert passed.shape[:2] == failed.shape[:2] == full.shape[:2] == empty.shape[:2] == expected
    # Three frames of 4-pixel-wide lines around 135-pixel pictures, plus the verdict text.
    assert color_pixels(passed, plots.PASSED_COLOR) > 3 * 2000 and color_pixels(passed, plots.FAILED_COLOR) < 50
    assert color_pixels(failed, plots.FAILED_COLOR) > 3 * 2000 and color_pixels(failed, plots.PASSED_COLOR) < 50
    with pytest.raises(ValueError, match="at most 32 images"):
        plots.plot_prediction_gallery([gray] * 33, ["a"] * 33, ["a"] * 33, [1.0] * 33, tmp_path / "bad.png")


def test_gradcam_figure(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    heat = rng.uniform(size=(5, 32, 32))
    path = plots.plot_gradcam(images, heat, ["a"] * 5, ["a", "b", "a", "b", "a"], [0.5] * 5, tmp_path / "g.png")
    assert png(path).shape[:2] == pixels(plots.GRADCAM_SIZE)
    with pytest.raises(ValueError, match="1 to 8 images"):
        plots.plot_gradcam(images[:0], heat[:0], [], [], [], tmp_path / "bad.png")
