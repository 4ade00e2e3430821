"""Times `--preset fast` on a GPU two ways, over several seeds:

1. the speedrun way: the dataset already on the device and torch.compile warmed up by a first
   run in the same process; the clock covers the epochs (training plus per-epoch validation)
   and nothing else; test accuracy of best.pt without test-time augmentation;
2. the way a user runs it: the whole `cifar100 train --preset fast` command, wall clock.

    python benchmarks/gpu_speedrun.py --dataset ../shared/data/cifar10-jpeg.tar.gz --seeds 0,1,2,3,4

`--device cpu` runs the same procedure on the CPU: not a speedrun, but how the script itself is
checked on a machine without a GPU (its test: a tiny dataset and `--set epochs=2`).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_settings_option, hardware, run_main, seconds, settings_note  # noqa: E402

from cifar100.data.sources import load_dataset  # noqa: E402
from cifar100.training.trainer import train  # noqa: E402
from cifar100.training.presets import configure, get_preset, parse_settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar100")
    parser.add_argument("--data-dir")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--skip-cli", action="store_true", help="only the speedrun-style timing")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    add_settings_option(parser)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_speedrun needs a CUDA GPU (--device cpu runs the procedure on the CPU, to check the script)")
    settings = parse_settings(args.settings)
    base = configure(get_preset(args.preset), settings)  # a bad --set fails here, before any training
    data = load_dataset(args.dataset, args.data_dir, quiet=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up run: compiles the model and autotunes cuDNN; not counted.
        train(base.with_overrides(seed=10_000), data.spec, dataset=data, device=args.device,
              out=Path(tmp) / "warmup", quiet=True)
        accs, secs = [], []
        for seed in seeds:
            r = train(base.with_overrides(seed=seed), data.spec, dataset=data, device=args.device,
                      out=Path(tmp) / f"seed{seed}", quiet=True)
            accs.append(r.test_acc)
            secs.append(r.train_seconds)
            print(f"seed {seed}: test {r.test_acc:.2%} in {seconds(r.train_seconds)}", flush=True)
        walls = []
        if not args.skip_cli:
            for seed in seeds[:2]:
                start = time.perf_counter()
                cmd = [sys.executable, "-m", "cifar100", "train", "--preset", args.preset, "--dataset", args.dataset,
                       "--seed", str(seed), "--device", args.device, "--out", str(Path(tmp) / f"cli{seed}"),
                       "--quiet", "--no-evaluate"]
                if args.data_dir:
                    cmd += ["--data-dir", args.data_dir]
                for item in args.settings:
                    cmd += ["--set", item]
                subprocess.run(cmd, check=True)
                walls.append(time.perf_counter() - start)
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"\n# gpu_speedrun: preset {args.preset} on {data.name}; {hardware(torch.device(args.device))}, "
          f"torch {torch.__version__}, {date.today()}{settings_note(args.settings)}")
    print(f"test accuracy (no TTA), {len(seeds)} seeds: {100 * statistics.mean(accs):.2f}% ± {100 * sd:.2f}")
    print(f"training time (data on device, after warm-up): median {seconds(statistics.median(secs))} "
          f"(min {seconds(min(secs))}, max {seconds(max(secs))})")
    if walls:
        print(f"whole command `cifar100 train --preset {args.preset}`: " + ", ".join(seconds(w) for w in walls))


if __name__ == "__main__":
    run_main(main)
