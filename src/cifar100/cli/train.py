"""`cifar100 train`: pick a preset, override any of its fields, train, write a run folder."""

from __future__ import annotations

import argparse
import shlex
import sys


def register(subparsers) -> None:
    from cifar100.data.image_folder import ARCHIVE_NAMES, LAYOUTS
    from cifar100.devices import DEVICE_CHOICES, PRECISION_CHOICES
    from cifar100.training.presets import SETTING_NAMES, TrainConfig

    p = subparsers.add_parser(
        "train",
        description="Train a model and write runs/<name>/ (config.json, history.csv, checkpoints/, "
        "metrics.json, plots/, report.html). Default preset: fast on a GPU, cpu otherwise.",
    )
    p.add_argument("--preset", help="a preset from `cifar100 presets` (default: fast on a GPU, cpu otherwise)")
    p.add_argument("--dataset", default="cifar100",
                   help=f"cifar100 (default), cifar10, or an image folder, as a folder or a {ARCHIVE_NAMES} of one: "
                   f"{LAYOUTS}; a <class>/<image> folder's test split is carved out (--test-size)")
    p.add_argument("--data-dir", help="dataset cache (default: $CIFAR100_DATA, else ~/.cache/cifar100)")
    p.add_argument("--out", help="run folder (default: runs/<name>)")
    p.add_argument("--name", help="run name (default: <dataset>-<preset>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoints/last.pt")
    p.add_argument("--device", default="auto", metavar="{" + ",".join(DEVICE_CHOICES) + "}", help="auto (default): cuda, then mps, then cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--no-evaluate", action="store_true", help="skip the figures and report at the end")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log to RUN/tensorboard/ (per-epoch losses, accuracies, LR; then the test metrics and "
                   "figures): view with `tensorboard --logdir runs`; needs pip install tensorboard")
    p.add_argument("--tta", action="store_true",
                   help="the final evaluation also reports test-time augmentation (as `evaluate --tta`), "
                   "in the same process: no second start-up and dataset load")
    defaults = TrainConfig()
    for name, field in SETTING_NAMES.items():
        if name in ("precision", "compile"):
            continue
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=type(getattr(defaults, field)), default=None,
                       help=SETTING_HELP.get(name, f"override the preset's {field}"))
    p.add_argument("--precision", choices=PRECISION_CHOICES, default=None,
                   help="auto (default): bf16 on GPUs that have it, fp16 on older ones, fp32 on CPU and MPS")
    p.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (CUDA only; without it if the first compilation fails)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any preset field, e.g. --set cutout=8 --set model_kwargs='{\"widths\": [32, 64, 128]}'")
    p.set_defaults(func=run)


# Flags whose values need more than "override the preset's X" to be understood.
SETTING_HELP = {
    "val_size": "images carved off the training set for validation: a fraction (0.1) or a count (5000); "
    "0: none; not used when the dataset has a val/ folder",
    "test_size": "images carved off a <class>/<image> folder for testing: a fraction (0.2) or a count (500)",
    "init_from": "fine-tune: start from a trained model (a run folder, checkpoint, weights folder, URL, or "
    "'pretrained' for the shipped CIFAR-100 model); its network is used, its head replaced if the classes differ",
}


def settings_from_args(args) -> dict:
    """The settings given as flags and --set, by the names users give them."""
    from cifar100.training.presets import SETTING_NAMES, parse_settings

    settings = {name: getattr(args, name) for name in SETTING_NAMES if getattr(args, name, None) is not None}
    settings.update(parse_settings(args.overrides))
    return settings


def run(args) -> int:
    from cifar100.errors import ConfigError
    from cifar100.training.trainer import configure_run, resume, train

    command = "cifar100 " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "cifar100 train"
    if args.tta and args.no_evaluate:
        raise ConfigError("--tta is part of the final evaluation, which --no-evaluate skips; drop one of them")
    tensorboard = None
    if args.tensorboard:
        from cifar100.evaluation.tensorboard import TensorBoardLog

        tensorboard = TensorBoardLog()
    common = {"device": args.device, "quiet": args.quiet, "data_dir": args.data_dir, "test_best": args.no_evaluate,
              "on_epoch": tensorboard.on_epoch if tensorboard else None}
    settings = settings_from_args(args)
    if args.resume:
        if settings or args.preset:
            raise ConfigError("--resume continues a run with its own settings; drop the other training flags")
        result = resume(args.resume, **common)
    else:
        preset, cfg = configure_run(args.preset, settings, args.device)
        result = train(cfg, args.dataset, preset=preset, out=args.out, name=args.name, command=command, **common)
    if result.is_main:
        report(result, evaluate=not args.no_evaluate, tta=args.tta, quiet=args.quiet)
        if tensorboard:
            tensorboard.add_run_results(result.run_dir, result.best_epoch)
            tensorboard.close()
            if not args.quiet:
                print(f"TensorBoard logs in {tensorboard.path}: tensorboard --logdir {result.run_dir.parent}", file=sys.stderr)
    return 0


def report(result, *, evaluate: bool, tta: bool, quiet: bool) -> None:
    """The end of a run: the full evaluation of best.pt (metrics.json, plots, report.html) in
    the same process, with the dataset already loaded; then one summary line."""
    with_tta = ""
    if evaluate:
        from cifar100.evaluation.evaluate import evaluate_run

        metrics = evaluate_run(result.run_dir, tta=tta, data_dir=result.data_dir, device=result.device,
                               quiet=quiet, dataset=result.dataset)
        result.test_acc = metrics["test"]["top1"]
        if tta:
            with_tta = f", {metrics['test_tta']['top1']:.2%} with TTA"
    if not quiet:
        print(
            f"best epoch {result.best_epoch}: val acc {result.best_val_acc:.2%}; test acc {result.test_acc:.2%}"
            f"{with_tta} (checkpoints/best.pt); training took {result.train_seconds:.1f}s. Run folder: {result.run_dir}",
            file=sys.stderr,
        )
