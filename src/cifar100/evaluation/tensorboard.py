"""TensorBoard logging (`--tensorboard`, the optional `tensorboard` extra): a run's per-epoch
scalars as training writes them, then its test metrics and the figures of its evaluation, in
`<run>/tensorboard/`. `tensorboard --logdir runs` (or `%tensorboard --logdir runs` in a
notebook or Colab) shows every run side by side; history.csv stays the record the tool reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cifar100.errors import ConfigError

LOG_FOLDER = "tensorboard"
INSTALL_HINT = "pip install tensorboard (in a checkout: pip install -e \".[tensorboard]\")"

# history.csv's columns under the tags TensorBoard groups into cards (loss/, accuracy/).
EPOCH_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
              "val_acc": "accuracy/val", "lr": "learning_rate", "seconds": "seconds_per_epoch"}


def require_tensorboard() -> None:
    """Fail before training starts, not after it ends, when the extra is not installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError(f"--tensorboard needs the tensorboard package: {INSTALL_HINT}") from None


class TensorBoardLog:
    """Opened on the first epoch (the run folder is known then) or by `open(run_dir)`."""

    def __init__(self):
        require_tensorboard()
        self.writer = None
        self.path: Path | None = None

    def open(self, run_dir: str | Path) -> "TensorBoardLog":
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.path = Path(run_dir) / LOG_FOLDER
            self.writer = SummaryWriter(log_dir=str(self.path))
        return self

    def on_epoch(self, trainer: Any, row: dict[str, float]) -> None:
        """The Trainer's per-epoch callback: that epoch's row of history.csv."""
        self.open(trainer.run.root).add_epoch(row)

    def add_epoch(self, row: dict[str, float]) -> None:
        epoch = int(row["epoch"])
        for column, tag in EPOCH_TAGS.items():
            value = row.get(column)
            if value is not None and np.isfinite(value):  # no val split: NaN, not a point at 0
                self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def add_run_results(self, run_dir: str | Path, epoch: int) -> None:
        """What the run's evaluation wrote: metrics.json's test numbers and the figures in
        plots/ (only the test numbers when the run skipped the full evaluation)."""
        from cifar100.runs import RunFolder

        folder = RunFolder(Path(run_dir))
        self.open(folder.root).add_evaluation(folder.read_metrics(), folder.plots_dir, epoch)

    def add_evaluation(self, metrics: dict[str, Any], plots_dir: str | Path, epoch: int) -> None:
        """The final test metrics (at the best epoch) and every figure in plots/."""
        for split in ("test", "test_tta"):
            for key, value in (metrics.get(split) or {}).items():
                if key != "images" and isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
                    self.writer.add_scalar(f"{split}/{key}", value, epoch)
        from PIL import Image

        for png in sorted(Path(plots_dir).glob("*.png")):
            with Image.open(png) as image:
                pixels = np.asarray(image.convert("RGB"))
            self.writer.add_image(f"figures/{png.stem}", pixels, epoch, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
