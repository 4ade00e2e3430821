"""Accuracy against training time for finished run folders, grouped by preset: a table (test
top-1 mean ± std over runs, with TTA where evaluated, top-5, superclass, training minutes) and
the figure of validation accuracy against the training clock, with each run's test top-1.
It reads runs, it trains nothing: make them with `cifar100 train`, on one machine, alone.

    python benchmarks/accuracy_vs_time.py runs/c100-* --out docs/images/accuracy_vs_time.png
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, run_main  # noqa: E402

from cifar100.errors import ConfigError  # noqa: E402
from cifar100.evaluation.plots import plot_accuracy_vs_time  # noqa: E402
from cifar100.runs import RunFolder  # noqa: E402


def read_run(run_dir: Path) -> tuple[str, dict]:
    run = RunFolder(run_dir)
    if not run.history_path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder: it has no history.csv")
    rows = run.read_history()
    clock, minutes = 0.0, []
    for row in rows:
        clock += row["seconds"]
        minutes.append(clock / 60)
    metrics = run.read_metrics()
    preset = (run.read_config() or {}).get("preset", run_dir.name)

    def top(split: str, key: str = "top1"):
        return (metrics.get(split) or {}).get(key)

    return preset, {"minutes": minutes, "val_acc": [row["val_acc"] for row in rows], "test_top1": top("test"),
                    "test_tta": top("test_tta"), "top5": top("test", "top5"), "coarse": top("test", "coarse_top1"),
                    "ece": top("test", "ece"), "epochs": len(rows)}


def mean_std(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f}% ± {100 * spread:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="write the figure here (PNG)")
    parser.add_argument("--title", default="CIFAR-100: accuracy against training time")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {}
    for run_dir in args.runs:
        preset, run = read_run(run_dir)
        runs.setdefault(preset, []).append(run)
    rows = [{
        "preset": preset, "runs": len(items), "epochs": "/".join(str(r["epochs"]) for r in items),
        "test top-1": mean_std([r["test_top1"] for r in items]), "with TTA": mean_std([r["test_tta"] for r in items]),
        "top-5": mean_std([r["top5"] for r in items]), "superclass": mean_std([r["coarse"] for r in items]),
        "ECE": mean_std([r["ece"] for r in items]),
        "training min": "/".join(f"{r['minutes'][-1]:.1f}" for r in items),
    } for preset, items in runs.items()]
    print_table(rows, list(rows[0]))
    if args.out:
        print(f"\nwrote {plot_accuracy_vs_time(runs, args.out, title=args.title)}")


if __name__ == "__main__":
    run_main(main)
