"""Wall time until a target test accuracy, over several seeds (median, min, max), for each
preset, all run by the same engine on the same machine. After every epoch the test accuracy
of the model being trained (EMA weights where the preset uses EMA) is measured outside the
clock; the time to target is the training clock (epochs incl. validation) at the first epoch
that reaches it. `--budget-minutes` stops a preset that has not reached the target by then
(the keras-seed replica takes hours on a CPU).

    python benchmarks/time_to_accuracy.py --dataset ../shared/data/cifar10-jpeg.tar.gz \
        --presets cpu,keras-seed --target 0.90 --seeds 0,1 --budget-minutes 25

`--from-runs RUN...` reads finished or interrupted run folders instead of training: the time
to target is then the training clock (history.csv's per-epoch seconds, summed) at the first
epoch whose *validation* accuracy reaches the target, grouped by preset. It costs nothing, so
runs made by the plain `cifar100 train` command can be compared afterwards.

    python benchmarks/time_to_accuracy.py --from-runs runs/cpu-* runs/keras-* --target 0.80
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_settings_option, hardware, print_table, run_main, seconds, settings_note  # noqa: E402

from cifar100.data.sources import load_dataset  # noqa: E402
from cifar100.runs import RunFolder  # noqa: E402
from cifar100.training.trainer import Trainer, evaluate_loader, train  # noqa: E402
from cifar100.errors import ConfigError  # noqa: E402
from cifar100.training.presets import TrainConfig, configure, get_preset, parse_settings  # noqa: E402


class OutOfBudget(Exception):
    pass


def run_one(preset: str, cfg: TrainConfig, data, target: float, budget_s: float, device: str, out: Path) -> dict:
    curve: list[tuple[float, float]] = []
    started, seed = time.perf_counter(), cfg.seed

    def on_epoch(trainer: Trainer, row: dict) -> None:
        _, acc = evaluate_loader(trainer.eval_model, trainer.test_loader, trainer.autocast)
        curve.append((trainer.elapsed, acc))
        print(f"  {preset} seed {seed} epoch {row['epoch']}: test {acc:.2%} at {seconds(trainer.elapsed)}", flush=True)
        if trainer.elapsed > budget_s:
            raise OutOfBudget

    try:
        train(cfg, data.spec, dataset=data, preset=preset, out=out / f"{preset}-{seed}", quiet=True,
              test_best=False, device=device, on_epoch=on_epoch)
    except OutOfBudget:
        pass
    reached = next((t for t, acc in curve if acc >= target), None)
    return {"time_to_target": reached, "final_acc": curve[-1][1], "train_s": curve[-1][0],
            "wall_s": time.perf_counter() - started, "epochs": len(curve)}


def from_run(run_dir: Path, target: float) -> tuple[str, dict]:
    """(preset, result) of an existing run folder, on validation accuracy."""
    run = RunFolder(run_dir)
    if not run.history_path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder: it has no history.csv")
    rows = run.read_history()
    if not rows:
        raise ConfigError(f"{run_dir} has not finished an epoch yet: history.csv has no rows")
    clock, curve = 0.0, []
    for row in rows:
        clock += row["seconds"]
        curve.append((clock, row["val_acc"]))
    reached = next((t for t, acc in curve if acc >= target), None)
    preset = (run.read_config() or {}).get("preset", run_dir.name)
    return preset, {"time_to_target": reached, "final_acc": curve[-1][1], "train_s": clock,
                    "wall_s": float("nan"), "epochs": len(curve)}


def summarize(preset: str, runs: list[dict], target: float) -> dict:
    times = [r["time_to_target"] for r in runs if r["time_to_target"] is not None]
    accs = [r["final_acc"] for r in runs]
    return {
        "preset": preset,
        f"reached {target:.0%}": f"{len(times)}/{len(runs)}",
        "time to target (median, min-max)": (
            f"{seconds(statistics.median(times))} ({seconds(min(times))}-{seconds(max(times))})" if times else "-"
        ),
        "final acc": f"{100 * statistics.mean(accs):.2f}% ± {100 * (statistics.stdev(accs) if len(accs) > 1 else 0):.2f}",
        "epochs": "/".join(str(r["epochs"]) for r in runs),
        "train": "/".join(seconds(r["train_s"]) for r in runs),
        "wall": "/".join(seconds(r["wall_s"]) if math.isfinite(r["wall_s"]) else "-" for r in runs),
    }


def print_ratios(results: dict[str, list[dict]], target: float) -> None:
    medians = {
        preset: statistics.median(r["time_to_target"] for r in runs)
        for preset, runs in results.items()
        if all(r["time_to_target"] is not None for r in runs)
    }
    first = next(iter(results))
    for preset, runs in results.items():
        if preset == first or first not in medians:
            continue
        if preset in medians:
            print(f"# {preset} needs {medians[preset] / medians[first]:.1f}x the time of {first} to reach {target:.0%}")
        else:
            longest = max(r["train_s"] for r in runs)
            print(f"# {preset} did not reach {target:.0%} in {seconds(longest)} of training: "
                  f"more than {longest / medians[first]:.1f}x the time of {first}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="../shared/data/cifar10-jpeg.tar.gz")
    parser.add_argument("--data-dir")
    parser.add_argument("--presets", default="cpu,keras-seed")
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--budget-minutes", type=float, default=25)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--keep", help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--from-runs", nargs="+", type=Path, help="read these run folders instead of training")
    add_settings_option(parser)
    args = parser.parse_args()
    settings = parse_settings(args.settings)
    if args.from_runs and settings:
        parser.error("--set changes runs to be trained; --from-runs reads finished ones")
    results: dict[str, list[dict]] = {}
    if args.from_runs:
        for run_dir in args.from_runs:
            preset, result = from_run(run_dir, args.target)
            results.setdefault(preset, []).append(result)
        hardware_line = (RunFolder(args.from_runs[0]).read_config() or {}).get("device", "?")
        what = "validation"
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
        # Every preset and setting checked before the first (possibly hour-long) run starts.
        configs = {preset: configure(get_preset(preset), settings) for preset in args.presets.split(",")}
        data = load_dataset(args.dataset, args.data_dir, quiet=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(args.keep or tmp)
            for preset, cfg in configs.items():
                results[preset] = [
                    run_one(preset, cfg.with_overrides(seed=s), data, args.target, 60 * args.budget_minutes,
                            args.device, out)
                    for s in seeds
                ]
        device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
        hardware_line = hardware(device)
        what = "test"
    rows = [summarize(preset, runs, args.target) for preset, runs in results.items()]
    print(f"\n# time_to_accuracy, target {args.target:.0%} {what} accuracy; {hardware_line}, "
          f"torch {torch.__version__}, {date.today()}{settings_note(args.settings)}")
    print_table(rows, list(rows[0]))
    print_ratios(results, args.target)


if __name__ == "__main__":
    run_main(main)
