"""Fine-tuning against training from scratch on a small dataset of your own, as a user would
run both: the real `cifar100 train` command, the same preset, images, epochs and seeds, with
and without `--init-from`.

The small dataset: `--per-class` training images of each CIFAR-10 class (the first ones, by
file name, of ../shared/data/cifar10-jpeg.tar.gz, real CIFAR-10 as JPEGs) in train/<class>/,
and the whole CIFAR-10 test set (1,000 per class) in test/<class>/, so the test accuracy is
measured on 10,000 images. CIFAR-10's images are not in CIFAR-100, and none of its classes is
one of CIFAR-100's, so what carries over is features, not answers.

    python benchmarks/finetune.py --init-from src/cifar100/pretrained/cifar100-cpu --per-class 100 --seeds 0 1 2

prints one row per run and a markdown table of mean ± std per condition.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SHARED_JPEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def build_folder(archive: Path, root: Path, per_class: int) -> Path:
    """train/<class>/ with the first `per_class` images of each class, test/<class>/ all of them.
    Two sequential passes over the archive: names first, then the chosen members' bytes (a
    gzip stream cannot seek back to a member cheaply)."""
    names: dict[tuple[str, str], list[str]] = {}
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 3 and parts[-3] in ("train", "test"):
                names.setdefault((parts[-3], parts[-2]), []).append(member.name)
    chosen = {name for (split, _), found in names.items()
              for name in (sorted(found)[:per_class] if split == "train" else found)}
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            if member.name in chosen:
                parts = Path(member.name).parts
                target = root / parts[-3] / parts[-2] / parts[-1]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    return root


def train(dataset: Path, out: Path, data_dir: Path, preset: str, seed: int, init_from: str | None) -> dict:
    command = [sys.executable, "-m", "cifar100", "train", "--preset", preset, "--dataset", str(dataset),
               "--data-dir", str(data_dir), "--out", str(out), "--seed", str(seed), "--no-evaluate", "--quiet"]
    if init_from:
        command += ["--init-from", init_from]
    subprocess.run(command, check=True)
    metrics = json.loads((out / "metrics.json").read_text())
    history = (out / "history.csv").read_text().strip().splitlines()[1:]
    seconds = sum(float(line.split(",")[-1]) for line in history)
    return {"test": metrics["test"]["top1"], "seconds": seconds, "epochs": len(history)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init-from", required=True, help="the trained model to fine-tune (run, weights folder, URL)")
    parser.add_argument("--per-class", type=int, default=100, help="training images per class (default: 100)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--archive", type=Path, default=SHARED_JPEG, help="CIFAR-10 as JPEG folders in a .tar.gz")
    parser.add_argument("--work", type=Path, help="where the folder and runs go (default: a temporary folder)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="finetune-"))
    dataset = build_folder(args.archive, work / f"cifar10-{args.per_class}-per-class", args.per_class)
    rows = []
    for condition, init_from in (("from scratch", None), (f"fine-tuned from {args.init_from}", args.init_from)):
        for seed in args.seeds:
            tag = "scratch" if init_from is None else "finetune"
            result = train(dataset, work / f"{tag}-s{seed}", work / "cache", args.preset, seed, init_from)
            rows.append({"condition": condition, "seed": seed, **result})
            print(f"{condition:40s} seed {seed}: test {result['test']:.2%} in {result['seconds']:.1f}s "
                  f"({result['epochs']} epochs)", flush=True)

    print(f"\n{args.per_class} CIFAR-10 training images per class (10% of them held out for validation), "
          f"preset {args.preset}; test: the 10,000 CIFAR-10 test images\n")
    print("| start | test top-1 (mean ± std) | training time | seeds |")
    print("| --- | --- | --- | --- |")
    for condition in dict.fromkeys(r["condition"] for r in rows):
        group = [r for r in rows if r["condition"] == condition]
        tests = [r["test"] for r in group]
        spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
        seconds = statistics.mean(r["seconds"] for r in group)
        print(f"| {condition} | {statistics.mean(tests):.2%} ± {spread:.2%} | {seconds:.1f} s | {len(group)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
