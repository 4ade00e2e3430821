"""Times `--preset fast` on a GPU two ways, over several seeds:

1. the speedrun way: the dataset already on the device and torch.compile warmed up by a first
   run in the same process; the clock covers the epochs (training plus per-epoch validation)
   and nothing else; test accuracy of best.pt without test-time augmentation;
2. the way a user runs it: the whole `cifar100 train --preset fast` command, wall clock.

    python benchmarks/gpu_speedrun.py --dataset ../shared/data/cifar10-jpeg.tar.gz --seeds 0,1,2,3,4
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
from common import hardware  # noqa: E402

from cifar100.datasets import load_dataset  # noqa: E402
from cifar100.engine import train  # noqa: E402
from cifar100.presets import get_preset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar100")
    parser.add_argument("--data-dir")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--skip-cli", action="store_true", help="only the speedrun-style timing")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_speedrun needs a CUDA GPU")
    data = load_dataset(args.dataset, args.data_dir, quiet=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up run: compiles the model and autotunes cuDNN; not counted.
        train(get_preset(args.preset).with_overrides(seed=10_000), data.spec, dataset=data,
              out=Path(tmp) / "warmup", quiet=True, evaluate=False)
        accs, secs = [], []
        for seed in seeds:
            r = train(get_preset(args.preset).with_overrides(seed=seed), data.spec, dataset=data,
                      out=Path(tmp) / f"seed{seed}", quiet=True, evaluate=False)
            accs.append(r.test_acc)
            secs.append(r.train_seconds)
            print(f"seed {seed}: test {r.test_acc:.2%} in {r.train_seconds:.2f}s", flush=True)
        walls = []
        if not args.skip_cli:
            for seed in seeds[:2]:
                start = time.perf_counter()
                cmd = [sys.executable, "-m", "cifar100", "train", "--preset", args.preset, "--dataset", args.dataset,
                       "--seed", str(seed), "--out", str(Path(tmp) / f"cli{seed}"), "--quiet", "--no-evaluate"]
                if args.data_dir:
                    cmd += ["--data-dir", args.data_dir]
                subprocess.run(cmd, check=True)
                walls.append(time.perf_counter() - start)
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"\n# gpu_speedrun: preset {args.preset} on {data.name}; {hardware(torch.device('cuda'))}, "
          f"torch {torch.__version__}, {date.today()}")
    print(f"test accuracy (no TTA), {len(seeds)} seeds: {100 * statistics.mean(accs):.2f}% ± {100 * sd:.2f}")
    print(f"training time (data on device, after warm-up): median {statistics.median(secs):.2f}s "
          f"(min {min(secs):.2f}, max {max(secs):.2f})")
    if walls:
        print(f"whole command `cifar100 train --preset {args.preset}`: " + ", ".join(f"{w:.1f}s" for w in walls))


if __name__ == "__main__":
    main()
