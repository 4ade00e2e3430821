"""Training images/s of each preset's model on this device, beside the device's measured
matmul FLOP rate and the model's FLOPs per image, so the table shows how close to the
machine's limit training runs. Runs the real training loop (engine.Trainer.train_epoch) on
random uint8 images held on the device; the first epoch is warm-up (and compile).

    python benchmarks/train_throughput.py [--presets cpu,fast] [--device cpu] [--steps 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hardware, matmul_flops, print_table, sync  # noqa: E402

from cifar100.datasets import Dataset, Split  # noqa: E402
from cifar100.engine import Trainer, start_runtime  # noqa: E402
from cifar100.models import forward_flops  # noqa: E402
from cifar100.presets import PRESETS, get_preset  # noqa: E402


def random_dataset(n_train: int, classes: int = 100) -> Dataset:
    rng = np.random.default_rng(0)
    def split(n):
        return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, classes, n).astype(np.int64))
    return Dataset("random", [f"c{i}" for i in range(classes)], split(n_train), split(10), spec="random")


def measure(preset: str, device_name: str, steps: int) -> dict:
    runtime = start_runtime(device_name)
    # Full-size steps only: a progressive-resizing preset's small early epochs would flatter it.
    cfg = get_preset(preset).with_overrides(val_size=0, epochs=2, progressive_size=0)
    data = random_dataset(cfg.batch_size * steps)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, data, Path(tmp), runtime, quiet=True)
        trainer.train_epoch(1)  # warm-up: allocator, cudnn autotune, torch.compile
        sync(runtime.device)
        start = time.perf_counter()
        trainer.train_epoch(2)
        sync(runtime.device)
        seconds = time.perf_counter() - start
    images = trainer.steps_per_epoch * cfg.batch_size
    flops = forward_flops(trainer.net.float())
    return {"preset": preset, "images_per_s": images / seconds, "fwd_flops": flops, "device": runtime.device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=None, help="comma-separated (default: all but smoke; cpu only on CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per timed epoch")
    args = parser.parse_args()
    device = start_runtime(args.device).device
    names = args.presets.split(",") if args.presets else (
        [p for p in PRESETS if p != "smoke"] if device.type == "cuda" else ["cpu", "keras-seed"]
    )
    peak = matmul_flops(device)
    rows = []
    for name in names:
        r = measure(name, args.device, args.steps)
        # Training costs ~3x the forward pass (forward, grad wrt activations, grad wrt weights).
        achieved = 3 * r["fwd_flops"] * r["images_per_s"]
        rows.append({
            "preset": name,
            "MFLOPs/img (fwd)": f"{r['fwd_flops'] / 1e6:.1f}",
            "train img/s": f"{r['images_per_s']:,.0f}",
            "achieved GFLOP/s": f"{achieved / 1e9:,.1f}",
            "limit img/s": f"{peak / (3 * r['fwd_flops']):,.0f}",
            "limit / achieved": f"{peak / achieved:.2f}x",
        })
    print(f"# train_throughput on {hardware(device)}, {date.today()}; torch {torch.__version__}")
    print(f"# measured matmul rate: {peak / 1e9:,.1f} GFLOP/s ({'bf16' if device.type == 'cuda' else 'fp32'})")
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
