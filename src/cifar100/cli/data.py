"""`cifar100 data download`, `data import` and `data stats`: fetch and verify a dataset, install
a copy the user already has, and show what is in it (images per class in train/val/test,
per-channel mean and std)."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
download: fetch the official CIFAR-100 (or CIFAR-10) python archive into the data dir, check
its md5, and unpack it once. Set CIFAR100_MIRROR=<base URL> to download from a mirror.

import PATH: install a copy you already have, as a download would: the official archive, any
tar archive of the official folder (.tar.gz, .tar.xz, .tar.bz2, .tar), or the extracted
folder (cifar-100-python/ or cifar-10-batches-py/, as torchvision or Keras leave it). Every file
is checked against the official md5s first; nothing is installed unless all of them match.

stats: images per class in the train, validation and test splits, split exactly as `train`
splits them (an image folder's own val/ is the validation split; else it is carved from the
training set, stratified and seeded, and a <class>/<image> folder's test split likewise), and
the mean and standard deviation of each colour channel on the 0..1 scale. With --out DIR it
also writes DIR/stats.json and DIR/class_distribution.png.

The data dir is --data-dir, else $CIFAR100_DATA, else ~/.cache/cifar100.
"""


def register(subparsers) -> None:
    from cifar100.data.image_folder import ARCHIVE_NAMES, LAYOUTS
    from cifar100.data.types import DEFAULT_SPLIT_SEED, DEFAULT_TEST_SIZE, DEFAULT_VAL_SIZE

    p = subparsers.add_parser(
        "data",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=lambda args: _usage(p))
    actions = p.add_subparsers(dest="data_command", metavar="ACTION")

    d = actions.add_parser("download", help="download, verify and unpack a dataset archive",
                           description="Download, verify (md5) and unpack the official CIFAR-100 or CIFAR-10 archive.")
    d.add_argument("--dataset", choices=["cifar100", "cifar10"], default="cifar100", help="which archive (default: cifar100)")
    _common(d)
    d.set_defaults(func=run_download)

    i = actions.add_parser("import", help="install a copy of CIFAR-100 (or CIFAR-10) you already have",
                           description="Install the official archive, any tar of the official folder, or the "
                           "extracted folder into the data dir, after checking every file against the official md5s.")
    i.add_argument("path", help="the archive (.tar.gz, .tar.xz, .tar.bz2, .tar) or the extracted folder")
    i.add_argument("--dataset", choices=["cifar100", "cifar10"], default="cifar100", help="which dataset it is (default: cifar100)")
    _common(i)
    i.set_defaults(func=run_import)

    s = actions.add_parser("stats", help="images per class and channel mean/std for train, val and test",
                           description="Images per class (train/val/test) and per-channel mean/std; "
                           "with --out, stats.json and class_distribution.png.")
    s.add_argument("--dataset", default="cifar100",
                   help=f"cifar100 (default), cifar10, or the path of an image folder ({LAYOUTS}) or of a "
                   f"{ARCHIVE_NAMES} of one")
    _common(s)
    s.add_argument("--val-size", type=float, default=DEFAULT_VAL_SIZE,
                   help=f"images carved from train for validation: a fraction ({DEFAULT_VAL_SIZE}, the default) or "
                   "a count (5000); not used when the dataset has a val/ folder")
    s.add_argument("--test-size", type=float, default=DEFAULT_TEST_SIZE,
                   help=f"images carved off a <class>/<image> folder for testing: a fraction ({DEFAULT_TEST_SIZE}, "
                   "the default) or a count (500)")
    s.add_argument("--seed", type=int, default=DEFAULT_SPLIT_SEED,
                   help=f"seed of the carved splits (default: {DEFAULT_SPLIT_SEED})")
    s.add_argument("--out", metavar="DIR", help="write stats.json and class_distribution.png into DIR")
    s.add_argument("--no-download", dest="download", action="store_false",
                   help="fail instead of downloading when the dataset is not in the data dir")
    s.set_defaults(func=run_stats)


def _common(p) -> None:
    p.add_argument("--data-dir", help="dataset cache (default: $CIFAR100_DATA, else ~/.cache/cifar100)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _usage(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_download(args) -> int:
    from cifar100.data.cifar_archives import archive_spec, load_cifar
    from cifar100.data.sources import default_data_dir

    data_dir = args.data_dir or default_data_dir()
    spec = archive_spec(args.dataset)
    dataset = load_cifar(spec, data_dir, download=True, quiet=args.quiet)
    print(
        f"{dataset.name} is ready in {data_dir}/{spec.folder}: {len(dataset.train):,} train and "
        f"{len(dataset.test):,} test images, {dataset.num_classes} classes (md5 verified)"
    )
    return 0


def run_import(args) -> int:
    from cifar100.data.cifar_archives import archive_spec, import_cifar
    from cifar100.data.sources import default_data_dir

    spec = archive_spec(args.dataset)
    if not args.quiet:
        print(f"checking {args.path} against the official {spec.name} md5s ...", flush=True)
    result = import_cifar(spec, args.path, args.data_dir or default_data_dir())
    for name, md5 in result.member_md5s.items():
        print(f"  {spec.folder}/{name}  md5 {md5}  ok")
    dataset = result.dataset
    superclasses = f" in {len(dataset.coarse_classes)} superclasses" if dataset.coarse_classes else ""
    print(
        f"{'replaced the copy in' if result.replaced else 'installed into'} {result.folder}: {len(dataset.train):,} train "
        f"and {len(dataset.test):,} test images, {dataset.num_classes} classes{superclasses}"
    )
    return 0


def run_stats(args) -> int:
    from cifar100.data.sources import load_dataset
    from cifar100.data.types import check_size

    # Before the dataset is loaded: a mistake costs no download or decoding.
    check_size(args.val_size, "--val-size")
    check_size(args.test_size, "--test-size", allow_zero=False)
    dataset = load_dataset(args.dataset, args.data_dir, download=args.download, quiet=args.quiet,
                           test_size=args.test_size, split_seed=args.seed)
    stats = dataset_stats(dataset, args.val_size, args.seed)
    print(format_stats(stats))
    if args.out:
        from pathlib import Path

        from cifar100.fileio import write_json
        from cifar100.evaluation.plots import plot_class_distribution

        out = Path(args.out)
        write_json(out / "stats.json", stats)
        counts = {split: list(s["per_class"].values()) for split, s in stats["splits"].items()}
        plot_class_distribution(dataset.classes, counts, out / "class_distribution.png",
                                title=f"{dataset.name}: images per class")
        print(f"wrote {out / 'stats.json'} and {out / 'class_distribution.png'}")
    return 0


def dataset_stats(dataset, val_size: float, seed: int) -> dict:
    """Counts per class and channel mean/std of each split, as plain JSON-ready numbers."""
    import numpy as np

    from cifar100.data.types import channel_mean_std, training_splits

    train, val = training_splits(dataset, val_size, seed)
    splits = {}
    for name, split in (("train", train), ("val", val), ("test", dataset.test)):
        per_class = np.bincount(split.labels, minlength=dataset.num_classes)
        mean, std = channel_mean_std(split.images) if len(split) else (None, None)
        splits[name] = {
            "images": len(split),
            "per_class": {c: int(n) for c, n in zip(dataset.classes, per_class)},
            # An empty split (--val-size 0) has no mean: null, not NaN, keeps the JSON valid.
            "mean": None if mean is None else [round(v, 6) for v in mean],
            "std": None if std is None else [round(v, 6) for v in std],
        }
    return {
        "dataset": dataset.name,
        "spec": dataset.spec,
        "num_classes": dataset.num_classes,
        "num_coarse_classes": len(dataset.coarse_classes) if dataset.coarse_classes else None,
        "val_size": val_size,
        "val_from": dataset.val_from,
        "seed": seed,
        "splits": splits,
    }


def format_stats(stats: dict) -> str:
    splits = stats["splits"]
    names = list(splits)
    lines = [
        f"{stats['dataset']}: {stats['num_classes']} classes"
        + (f" in {stats['num_coarse_classes']} superclasses" if stats["num_coarse_classes"] else "")
        + "; "
        + ", ".join(f"{name} {splits[name]['images']:,}" for name in names)
        + (" images (val from the folder's own val/)" if stats["val_from"] == "folder"
           else f" images (val carved from train, seed {stats['seed']})"),
        "",
        f"{'split':<6} {'mean R':>7} {'mean G':>7} {'mean B':>7}   {'std R':>6} {'std G':>6} {'std B':>6}   (0..1 scale)",
    ]
    for name in names:
        mean, std = splits[name]["mean"], splits[name]["std"]
        if mean is None:
            lines.append(f"{name:<6} (no images)")
            continue
        lines.append(f"{name:<6} " + " ".join(f"{v:7.4f}" for v in mean) + "   " + " ".join(f"{v:6.4f}" for v in std))
    lines.append("")
    classes = list(splits[names[0]]["per_class"])
    width = max(12, *(len(c) for c in classes))
    lines.append(f"{'class':<{width}} " + " ".join(f"{name:>7}" for name in names))
    for c in classes:
        lines.append(f"{c:<{width}} " + " ".join(f"{splits[name]['per_class'][c]:>7,}" for name in names))
    for label, pick in (("min", min), ("max", max)):
        lines.append(f"{label:<{width}} " + " ".join(f"{pick(splits[name]['per_class'].values()):>7,}" for name in names))
    return "\n".join(lines)
