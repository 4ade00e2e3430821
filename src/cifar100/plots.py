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
