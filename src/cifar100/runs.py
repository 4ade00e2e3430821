"""The run folder, the unit of output every command shares. This module is its one owner: where
each file lives, how config.json, history.csv and metrics.json are read and written, which
epoch is "best", and which run a checkpoint belongs to. Everything else asks it.

    runs/<name>/
      config.json              settings, dataset (with its data dir), seed, device, versions, command
      history.csv              one row per epoch: HISTORY_COLUMNS
      checkpoints/last.pt      after every epoch (what --resume needs)
      checkpoints/best.pt      the epoch `best_epoch` picks
      metrics.json             the final evaluation of best.pt
      plots/*.png, report.html
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from cifar100.errors import CheckpointError, ConfigError
from cifar100.fileio import atomic_write_text, read_json, write_json

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
CHECKPOINT_NAMES = ("best", "last")


def selection_score(row: dict[str, float]) -> float:
    """What chooses best.pt: validation accuracy, or training accuracy for a run without a
    validation split (its val_acc is NaN)."""
    return row["train_acc"] if math.isnan(row["val_acc"]) else row["val_acc"]


def best_epoch(rows: list[dict[str, float]]) -> int | None:
    """The epoch best.pt holds: the highest `selection_score`, the first on ties (the trainer
    saves best.pt only when an epoch beats every earlier one)."""
    best, chosen = -math.inf, None
    for row in rows:
        score = selection_score(row)
        if score > best:
            best, chosen = score, int(row["epoch"])
    return chosen


def read_history(path: str | Path) -> list[dict[str, float]]:
    """history.csv as rows (epoch an int, the rest floats); a clear error for anything else."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a readable history (columns {','.join(HISTORY_COLUMNS)}): {exc}") from None
    missing = set(HISTORY_COLUMNS) - set(rows[0]) if rows else set()
    if missing:
        raise ConfigError(f"{path} lacks the columns {', '.join(sorted(missing))}")
    return rows


def history_columns(rows: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """The history as one float array per column, as the figures take it."""
    return {c: np.array([row[c] for row in rows], dtype=float) for c in HISTORY_COLUMNS}


def default_run_name(dataset_name: str, preset: str) -> str:
    return f"{dataset_name}-{preset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run_of_checkpoint(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint file sits in (runs/<name>/checkpoints/x.pt), else None."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def resolve_checkpoint(run_or_checkpoint: str | Path, which: str = "best") -> Path:
    """A run folder -> its checkpoints/{which}.pt (falling back to last.pt for a run that was
    interrupted before its first best); a file -> itself."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        folder = RunFolder(path)
        candidates = [folder.checkpoint(which), folder.last]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"{path} holds no checkpoint (looked for {', '.join(str(c) for c in candidates)}) and is not a "
            f"weights folder (model.safetensors + config.json)"
        )
    if not path.is_file():
        raise CheckpointError(f"no run folder, checkpoint file or weights folder at {path}")
    return path


@dataclass
class RunFolder:
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def history_path(self) -> Path:
        return self.root / "history.csv"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    @property
    def report_path(self) -> Path:
        return self.root / "report.html"

    def checkpoint(self, which: str) -> Path:
        if which not in CHECKPOINT_NAMES:
            raise ConfigError(f"which must be {' or '.join(CHECKPOINT_NAMES)}, got {which!r}")
        return self.root / "checkpoints" / f"{which}.pt"

    @property
    def last(self) -> Path:
        return self.checkpoint("last")

    @property
    def best(self) -> Path:
        return self.checkpoint("best")

    @property
    def has_run(self) -> bool:
        """A run has been started here (last.pt exists): a new run must not overwrite it."""
        return self.last.exists()

    # -- what the trainer writes ---------------------------------------------------------

    def prepare(self, checkpoint_bytes: int) -> None:
        """Fail before training, not after an hour, if the folder cannot hold the run."""
        try:
            (self.root / "checkpoints").mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"cannot write to the run folder {self.root}: {exc.strerror or exc}") from None
        # last.pt, best.pt and a temporary copy during each atomic write.
        need = 3 * checkpoint_bytes + (1 << 20)
        free = shutil.disk_usage(self.root).free
        if free < need:
            raise ConfigError(
                f"not enough free disk space for the run folder {self.root}: {free / 1e6:.1f} MB free, "
                f"about {need / 1e6:.1f} MB needed for the checkpoints"
            )

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.config_path, config)

    def write_history(self, rows: list[dict[str, float]]) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in HISTORY_COLUMNS})
        atomic_write_text(self.history_path, out.getvalue())

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        return write_json(self.metrics_path, metrics)

    # -- what everything else reads ------------------------------------------------------

    def read_config(self) -> dict[str, Any] | None:
        """config.json (None for a folder without one, such as a bare copy of checkpoints)."""
        return self._read_object(self.config_path) if self.config_path.is_file() else None

    def read_metrics(self) -> dict[str, Any]:
        """metrics.json ({} before the run has been evaluated)."""
        return self._read_object(self.metrics_path) if self.metrics_path.is_file() else {}

    def read_history(self) -> list[dict[str, float]]:
        """history.csv's rows ([] before the first epoch has finished)."""
        return read_history(self.history_path) if self.history_path.is_file() else []

    def data_dir(self) -> str | None:
        """The data dir the run was trained from, as config.json records it."""
        config = self.read_config() or {}
        return (config.get("dataset") or {}).get("data_dir")

    @staticmethod
    def _read_object(path: Path) -> dict[str, Any]:
        try:
            data = read_json(path)
        except ValueError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} does not hold a JSON object")
        return data
