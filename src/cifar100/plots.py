"""Every figure the tool draws, in one module: numbers in, PNG out (matplotlib, Agg backend,
written atomically). Each function takes plain arrays/lists and a path and returns the path."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cifar100.fileio import atomic_write_bytes  # noqa: E402

DPI = 100


def save_figure(fig, path: str | Path) -> Path:
    """Render to PNG in memory, then write atomically; always closes the figure."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


# `cifar100 data stats`: one stacked bar per class. Fixed size whatever the class count; class
# names are thinned out past MAX_NAMED_CLASSES so they stay legible.
CLASS_DISTRIBUTION_SIZE = (16.0, 6.0)  # inches: 1600 x 600 pixels at DPI 100
MAX_NAMED_CLASSES = 100
SPLIT_COLORS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}


def plot_class_distribution(
    class_names: list[str], counts_by_split: dict, path: str | Path, title: str = "Images per class"
) -> Path:
    """Stacked bars of images per class, one layer per split.

    counts_by_split: split name ("train", "val", "test", ...) -> a count per class, in the
    order of class_names."""
    n = len(class_names)
    if n == 0:
        raise ValueError("the class distribution needs at least one class")
    for split, counts in counts_by_split.items():
        if len(counts) != n:
            raise ValueError(f"{split}: {len(counts)} counts for {n} classes")
    fig, ax = plt.subplots(figsize=CLASS_DISTRIBUTION_SIZE)
    positions = list(range(n))
    bottom = [0] * n
    for i, (split, counts) in enumerate(counts_by_split.items()):
        counts = [int(c) for c in counts]
        color = SPLIT_COLORS.get(split, f"C{i + 3}")
        ax.bar(positions, counts, bottom=bottom, width=0.8, color=color, label=f"{split} ({sum(counts):,} images)")
        bottom = [b + c for b, c in zip(bottom, counts)]
    step = max(1, -(-n // MAX_NAMED_CLASSES))
    ax.set_xticks(positions[::step])
    ax.set_xticklabels(class_names[::step], rotation=90, fontsize=8 if n <= 40 else 6)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("images")
    ax.set_title(f"{title} ({n} classes)")
    ax.legend(loc="upper right", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.subplots_adjust(left=0.05, right=0.99, top=0.93, bottom=0.2)
    return save_figure(fig, path)
