"""What each speedrun trick buys, measured: the `cpu` preset trained with one trick switched
off at a time, on a subset of a real dataset, over a few seeds. Prints test accuracy (mean and
spread) and training time per variant.

    python benchmarks/tricks.py --dataset ../shared/data/cifar10-jpeg.tar.gz \
        --train-images 10000 --epochs 4 --seeds 0,1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_settings_option, hardware, print_table, run_main, seconds, settings_note  # noqa: E402

from cifar100.data.types import Dataset  # noqa: E402
from cifar100.data.sources import load_dataset  # noqa: E402
from cifar100.training.trainer import train  # noqa: E402
from cifar100.training.presets import configure, get_preset, parse_settings  # noqa: E402

VARIANTS: dict[str, dict] = {
    "all tricks (cpu preset)": {},
    "no patch whitening": {"model_kwargs": {"whiten": False}},
    "no identity init": {"model_kwargs": {"identity_init": False}},
    "BatchNorm momentum 0.1 (PyTorch default)": {"model_kwargs": {"bn_momentum": 0.1}},
    "no label smoothing": {"label_smoothing": 0.0},
    "random flips, not alternating": {"flip": "random"},
    "no translation": {"translate": 0},
    "plus EMA of weights (0.99)": {"ema_decay": 0.99},
    "Nesterov SGD for the conv filters, not Muon": {"optimizer": "sgd"},
    "2 convs in every stage, not 2/3/3": {"model_kwargs": {"convs_per_stage": 2}},
    "no Lookahead": {"lookahead_every": 0},
    "no progressive resizing": {"progressive_size": 0},
}


def subset(dataset: Dataset, n_train: int, seed: int = 0) -> Dataset:
    index = np.random.default_rng(seed).permutation(len(dataset.train))[:n_train]
    return Dataset(dataset.name, dataset.classes, dataset.train.subset(np.sort(index)), dataset.test,
                   dataset.coarse_classes, dataset.spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="../shared/data/cifar10-jpeg.tar.gz")
    parser.add_argument("--data-dir")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--train-images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--only", help="comma-separated variant numbers (0 = baseline)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_settings_option(parser)
    args = parser.parse_args()
    # The variants switch one trick each on top of these; a 1,000-image validation split is
    # enough for the per-epoch curve and leaves the subset for training.
    base = configure(get_preset(args.preset), {"epochs": args.epochs, "val_size": 1000, **parse_settings(args.settings)})
    data = subset(load_dataset(args.dataset, args.data_dir, quiet=True), args.train_images)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = list(VARIANTS)
    if args.only:
        names = [names[int(i)] for i in args.only.split(",")]
    rows = []
    for name in names:
        overrides = dict(VARIANTS[name])
        if "model_kwargs" in overrides:
            overrides["model_kwargs"] = {**base.model_kwargs, **overrides["model_kwargs"]}
        accs, secs = [], []
        for seed in seeds:
            cfg = base.with_overrides(seed=seed, **overrides)
            with tempfile.TemporaryDirectory() as tmp:
                result = train(cfg, data.spec, dataset=data, out=Path(tmp) / "run", quiet=True,
                               device=args.device)
            accs.append(result.test_acc)
            secs.append(result.train_seconds)
        rows.append({
            "variant": name if VARIANTS[name] else f"all tricks ({args.preset} preset)",
            "test acc": f"{100 * statistics.mean(accs):.2f}% ± {100 * (statistics.stdev(accs) if len(accs) > 1 else 0):.2f}",
            "seeds": len(seeds),
            "train": seconds(statistics.mean(secs)),
        })
        print(rows[-1], flush=True)
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    print(f"\n# tricks: preset {args.preset}, {args.train_images} training images of {data.name}, "
          f"{base.epochs} epochs; {hardware(device)}, torch {torch.__version__}, {date.today()}"
          f"{settings_note(args.settings)}")
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    run_main(main)
