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
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hardware, print_table  # noqa: E402

from cifar100.datasets import load_dataset  # noqa: E402
from cifar100.engine import Trainer, evaluate_loader, read_history, train  # noqa: E402
from cifar100.fileio import read_json  # noqa: E402
from cifar100.presets import get_preset  # noqa: E402


class OutOfBudget(Exception):
    pass


def run_one(preset: str, seed: int, data, target: float, budget_s: float, device: str, out: Path) -> dict:
    curve: list[tuple[float, float]] = []
    started = time.perf_counter()

    def on_epoch(trainer: Trainer, row: dict) -> None:
        _, acc = evaluate_loader(trainer.eval_model, trainer.test_loader, trainer.autocast)
        curve.append((trainer.elapsed, acc))
        print(f"  {preset} seed {seed} epoch {row['epoch']}: test {acc:.2%} at {trainer.elapsed:.0f}s", flush=True)
        if trainer.elapsed > budget_s:
            raise OutOfBudget

    cfg = get_preset(preset).with_overrides(seed=seed)
    try:
        train(cfg, data.spec, dataset=data, preset=preset, out=out / f"{preset}-{seed}", quiet=True,
              evaluate=False, device=device, on_epoch=on_epoch)
    except OutOfBudget:
        pass
    reached = next((t for t, acc in curve if acc >= target), None)
    return {"time_to_target": reached, "final_acc": curve[-1][1], "train_s": curve[-1][0],
            "wall_s": time.perf_counter() - started, "epochs": len(curve)}


def from_run(run_dir: Path, target: float) -> tuple[str, dict]:
    """(preset, result) of an existing run folder, on validation accuracy."""
    rows = read_history(run_dir / "history.csv")
    clock, curve = 0.0, []
    for row in rows:
        clock += row["seconds"]
        curve.append((clock, row["val_acc"]))
    reached = next((t for t, acc in curve if acc >= target), None)
    preset = read_json(run_dir / "config.json").get("preset", run_dir.name)
    return preset, {"time_to_target": reached, "final_acc": curve[-1][1], "train_s": clock,
                    "wall_s": float("nan"), "epochs": len(curve)}


def summarize(preset: str, runs: list[dict], target: float) -> dict:
    times = [r["time_to_target"] for r in runs if r["time_to_target"] is not None]
    accs = [r["final_acc"] for r in runs]
    return {
        "preset": preset,
        f"reached {target:.0%}": f"{len(times)}/{len(runs)}",
        "time to target (median, min-max)": (
            f"{statistics.median(times):.0f}s ({min(times):.0f}-{max(times):.0f})" if times else "-"
        ),
        "final acc": f"{100 * statistics.mean(accs):.2f}% ± {100 * (statistics.stdev(accs) if len(accs) > 1 else 0):.2f}",
        "epochs": "/".join(str(r["epochs"]) for r in runs),
        "train s": "/".join(f"{r['train_s']:.0f}" for r in runs),
        "wall s": "/".join(f"{r['wall_s']:.0f}" for r in runs),
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
            print(f"# {preset} did not reach {target:.0%} in {longest:.0f}s of training: "
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
    args = parser.parse_args()
    results: dict[str, list[dict]] = {}
    if args.from_runs:
        for run_dir in args.from_runs:
            preset, result = from_run(run_dir, args.target)
            results.setdefault(preset, []).append(result)
        hardware_line = read_json(args.from_runs[0] / "config.json").get("device", "?")
        what = "validation"
    else:
        data = load_dataset(args.dataset, args.data_dir, quiet=True)
        seeds = [int(s) for s in args.seeds.split(",")]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(args.keep or tmp)
            for preset in args.presets.split(","):
                results[preset] = [
                    run_one(preset, s, data, args.target, 60 * args.budget_minutes, args.device, out) for s in seeds
                ]
        device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
        hardware_line = hardware(device)
        what = "test"
    rows = [summarize(preset, runs, args.target) for preset, runs in results.items()]
    print(f"\n# time_to_accuracy, target {args.target:.0%} {what} accuracy; {hardware_line}, "
          f"torch {torch.__version__}, {date.today()}")
    print_table(rows, list(rows[0]))
    print_ratios(results, args.target)


if __name__ == "__main__":
    main()
