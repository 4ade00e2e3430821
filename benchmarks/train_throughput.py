"""Training images/s of each preset's model on this device, beside the device's measured
matmul FLOP rate and the model's FLOPs per image, so the table shows how close to the
machine's limit training runs. Runs the real training loop (trainer.Trainer.train_epoch) on
random uint8 images held on the device; the first epoch is warm-up (and compile).

The matmul rate is measured right before and right after each timed epoch, and each epoch is
compared with the mean of the two: a shared VM's speed drifts by 1.4x within minutes, so one
rate measured at the start and set against epochs timed later would read that drift as the
model's efficiency. The table gives the median over `--rounds` epochs and their range.

    python benchmarks/train_throughput.py [--presets cpu,fast] [--device cpu] [--steps 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hardware, matmul_flops, print_table, run_main, sync  # noqa: E402

from cifar100.data.types import Dataset, Split  # noqa: E402
from cifar100.training.runtime import start_runtime  # noqa: E402
from cifar100.training.trainer import Trainer  # noqa: E402
from cifar100.training.models import forward_flops  # noqa: E402
from cifar100.training.presets import PRESETS, get_preset  # noqa: E402


def random_dataset(n_train: int, classes: int = 100) -> Dataset:
    rng = np.random.default_rng(0)
    def split(n):
        return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, classes, n).astype(np.int64))
    return Dataset("random", [f"c{i}" for i in range(classes)], split(n_train), split(10), spec="random")


def measure(preset: str, device_name: str, steps: int, rounds: int) -> dict:
    """Per timed epoch: images/s and the matmul rate around it (mean of before and after)."""
    runtime = start_runtime(device_name)
    # Full-size steps only: a progressive-resizing preset's small early epochs would flatter it.
    cfg = get_preset(preset).with_overrides(val_size=0, epochs=rounds + 1, progressive_size=0)
    data = random_dataset(cfg.batch_size * steps)
    rates, peaks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, data, Path(tmp), runtime, quiet=True)
        trainer.train_epoch(1)  # warm-up: allocator, cudnn autotune, torch.compile
        for epoch in range(2, rounds + 2):
            before = matmul_flops(runtime.device, seconds=1.0)
            sync(runtime.device)
            start = time.perf_counter()
            trainer.train_epoch(epoch)
            sync(runtime.device)
            seconds = time.perf_counter() - start
            after = matmul_flops(runtime.device, seconds=1.0)
            rates.append(trainer.steps_per_epoch * cfg.batch_size / seconds)
            peaks.append((before + after) / 2)
    return {"images_per_s": rates, "peak": peaks, "fwd_flops": forward_flops(trainer.net.float()),
            "device": runtime.device}


def spread(values: list[float], fmt: str, unit: str = "") -> str:
    """The median, and the range when there is more than one value."""
    median = format(statistics.median(values), fmt) + unit
    return median if len(values) == 1 else f"{median} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=None, help="comma-separated (default: all but smoke on a GPU; the CPU presets and keras-seed on a CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per timed epoch")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per preset, each between two matmul measurements")
    args = parser.parse_args()
    device = start_runtime(args.device).device
    names = args.presets.split(",") if args.presets else (
        [p for p in PRESETS if p != "smoke"] if device.type == "cuda" else ["cpu-small", "cpu", "keras-seed"]
    )
    rows = []
    for name in names:
        r = measure(name, args.device, args.steps, args.rounds)
        # Training costs ~3x the forward pass (forward, grad wrt activations, grad wrt weights).
        train_flops = 3 * r["fwd_flops"]
        rows.append({
            "preset": name,
            "MFLOPs/img (fwd)": f"{r['fwd_flops'] / 1e6:.1f}",
            "train img/s": spread(r["images_per_s"], ",.0f"),
            "achieved GFLOP/s": spread([train_flops * x / 1e9 for x in r["images_per_s"]], ",.1f"),
            "matmul GFLOP/s": spread([x / 1e9 for x in r["peak"]], ",.1f"),
            "limit / achieved": spread([peak / (train_flops * x) for x, peak in zip(r["images_per_s"], r["peak"])], ".2f", "x"),
        })
    print(f"# train_throughput on {hardware(device)}, {date.today()}; torch {torch.__version__}")
    print(f"# matmul rate ({'bf16' if device.type == 'cuda' else 'fp32'}) measured around each timed epoch; "
          f"median (min-max) of {args.rounds} epochs of {args.steps} steps")
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    run_main(main)
