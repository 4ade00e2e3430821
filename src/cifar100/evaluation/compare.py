"""Several runs side by side: their histories overlaid in one figure and a table of their
headline numbers (e.g. `keras-seed` against `fast`). Reads only what each run folder holds —
config.json, history.csv, metrics.json — so finished, interrupted and unevaluated runs mix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cifar100.errors import ConfigError
from cifar100.runs import RunFolder, best_epoch, history_columns


@dataclass
class RunSummary:
    name: str
    path: Path
    config: dict[str, Any]
    rows: list[dict[str, float]]  # history.csv
    metrics: dict[str, Any]

    @property
    def history(self) -> dict[str, np.ndarray] | None:
        return history_columns(self.rows) if self.rows else None

    @property
    def epochs_done(self) -> int:
        return len(self.rows)

    @property
    def epochs_planned(self) -> int | None:
        return (self.config.get("config") or {}).get("epochs")

    @property
    def best_val_acc(self) -> float | None:
        """Validation accuracy of the epoch best.pt holds (None without a validation split)."""
        epoch = best_epoch(self.rows)
        row = next((r for r in self.rows if r["epoch"] == epoch), None)
        return None if row is None or np.isnan(row["val_acc"]) else row["val_acc"]

    @property
    def train_seconds(self) -> float | None:
        if self.metrics.get("train_seconds") is not None:
            return float(self.metrics["train_seconds"])
        return sum(r["seconds"] for r in self.rows) if self.rows else None

    def split(self, key: str) -> dict[str, Any]:
        return self.metrics.get(key) or {}


def load_run(path: str | Path) -> RunSummary:
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path} is not a run folder (no such directory)")
    run = RunFolder(path)
    if not run.config_path.is_file() and not run.history_path.is_file():
        raise ConfigError(f"{path} is not a run folder: it has neither config.json nor history.csv")
    config = run.read_config() or {}
    return RunSummary(config.get("name") or path.name, path, config, run.read_history(), run.read_metrics())


def unique_names(runs: list[RunSummary]) -> list[str]:
    """Run names for legends and the table; the path as given where two runs share a name."""
    names = [r.name for r in runs]
    return [str(r.path) if names.count(r.name) > 1 else r.name for r in runs]


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def format_table(runs: list[RunSummary]) -> str:
    """The headline numbers, one row per run. Test numbers come from each run's metrics.json
    (its checkpoint is named in the last column); '-' where a run has not been evaluated."""
    header = ["run", "preset", "model", "params", "epochs", "best val", "test top-1", "top-5", "loss", "ECE",
              "superclass", "TTA top-1", "train time", "checkpoint"]
    rows = []
    for name, run in zip(unique_names(runs), runs):
        test = run.split("test")
        model = run.config.get("model") or run.metrics.get("model") or {}
        params = model.get("parameters")
        planned = run.epochs_planned
        seconds = run.train_seconds
        checkpoint = run.metrics.get("checkpoint")
        rows.append([
            name,
            str(run.config.get("preset", "-")),
            str(model.get("arch", "-")),
            "-" if params is None else f"{params / 1e6:.2f}M",
            f"{run.epochs_done}/{planned}" if planned else str(run.epochs_done),
            _percent(run.best_val_acc),
            _percent(test.get("top1")),
            _percent(test.get("top5")),
            "-" if test.get("loss") is None else f"{test['loss']:.4f}",
            _percent(test.get("ece")),
            _percent(test.get("coarse_top1")),
            _percent(run.split("test_tta").get("top1")),
            "-" if seconds is None else f"{seconds:.0f}s",
            "-" if checkpoint is None else f"{Path(checkpoint).stem} (epoch {run.metrics.get('epoch', '?')})",
        ])
    # Columns only some datasets or evaluations have are left out when no run has them.
    optional = {"superclass", "TTA top-1"}
    keep = [i for i, h in enumerate(header) if h not in optional or any(r[i] != "-" for r in rows)]
    header, rows = [header[i] for i in keep], [[r[i] for i in keep] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    left = {"run", "preset", "model", "checkpoint"}

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if h in left else c.rjust(w) for h, c, w in zip(header, cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def compare_runs(paths: list[str | Path], out: str | Path) -> tuple[list[RunSummary], Path]:
    """Load the runs, draw their overlaid histories to `out`; returns the runs and the figure."""
    from cifar100.evaluation import plots

    if not paths:
        raise ConfigError("give at least one run folder to compare")
    runs = [load_run(p) for p in paths]
    histories = {name: r.history for name, r in zip(unique_names(runs), runs) if r.history is not None and r.epochs_done}
    if not histories:
        raise ConfigError("none of these runs has finished an epoch yet: there is no history to plot")
    title = "Runs compared: " + ", ".join(histories) if len(", ".join(histories)) <= 80 else f"{len(histories)} runs compared"
    return runs, plots.plot_history_comparison(histories, out, title=title)
