"""`cifar100 train`: pick a preset, override any of its fields, train, write a run folder."""

from __future__ import annotations

import argparse
import shlex
import sys

# Flags users know from torchvision's reference script, each mapped to a TrainConfig field.
FIELD_FLAGS = {
    "--epochs": ("epochs", int),
    "--batch-size": ("batch_size", int),
    "--lr": ("lr", float),
    "--seed": ("seed", int),
    "--optimizer": ("optimizer", str),
    "--schedule": ("schedule", str),
    "--weight-decay": ("weight_decay", float),
    "--label-smoothing": ("label_smoothing", float),
    "--mixup-alpha": ("mixup_alpha", float),
    "--cutmix-alpha": ("cutmix_alpha", float),
    "--model-ema": ("ema_decay", float),
    "--grad-clip": ("grad_clip", float),
    "--val-size": ("val_size", int),
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        description="Train a model and write runs/<name>/ (config.json, history.csv, checkpoints/, "
        "metrics.json, plots/, report.html). Default preset: fast on a GPU, cpu otherwise.",
    )
    p.add_argument("--preset", help="a preset from `cifar100 presets` (default: fast on a GPU, cpu otherwise)")
    p.add_argument("--dataset", default="cifar100", help="cifar100 (default), cifar10, or a path to an image folder / .tar.gz")
    p.add_argument("--data-dir", help="dataset cache (default: $CIFAR100_DATA, else ~/.cache/cifar100)")
    p.add_argument("--out", help="run folder (default: runs/<name>)")
    p.add_argument("--name", help="run name (default: <dataset>-<preset>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoints/last.pt")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--no-evaluate", action="store_true", help="skip the figures and report at the end")
    p.add_argument("--tta", action="store_true",
                   help="the final evaluation also reports test-time augmentation (as `evaluate --tta`), "
                   "in the same process: no second start-up and dataset load")
    for flag, (field, kind) in FIELD_FLAGS.items():
        p.add_argument(flag, dest=field, type=kind, default=None, help=f"override the preset's {field}")
    p.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (CUDA only)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any preset field, e.g. --set cutout=8 --set model_kwargs='{\"widths\": [32, 64, 128]}'")
    p.set_defaults(func=run)


def config_from_args(args):
    """The preset named by --preset (or the device's default) with every override applied."""
    import torch

    from cifar100.presets import configure, get_preset, parse_settings

    preset = args.preset or ("fast" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    overrides = {field: getattr(args, field) for field, _ in FIELD_FLAGS.values() if getattr(args, field) is not None}
    if args.compile is not None:
        overrides["compile"] = args.compile
    overrides.update(parse_settings(args.overrides))
    cfg = configure(get_preset(preset), overrides)
    check_model_settings(cfg)
    return preset, cfg, overrides


def check_model_settings(cfg) -> None:
    """Build the model and pass two images through it, so that model settings which make no
    working network (a misspelled or negative width, an unknown argument) fail here, before the
    dataset is loaded, with a message instead of a traceback from deep inside PyTorch. On the
    CPU: 0.1 s for the cpu preset's model, 0.6 s for the largest (PyTorch's meta device would
    cost a fixed ~1.4 s of imports on first use)."""
    import warnings

    import torch

    from cifar100.errors import ConfigError
    from cifar100.models import create_model

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "initializing zero-element tensors" and the like
            net = create_model(cfg.model, **{**cfg.model_kwargs, "num_classes": 10})
            net.eval()(torch.zeros(2, 3, 32, 32))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the model's code raises, these settings do not build it
        raise ConfigError(
            f"the model settings make no working {cfg.model}: model_kwargs={cfg.model_kwargs} "
            f"fails with {type(exc).__name__}: {exc}"
        ) from None


def run(args) -> int:
    from cifar100.engine import train
    from cifar100.errors import ConfigError

    command = "cifar100 " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "cifar100 train"
    if args.tta and args.no_evaluate:
        raise ConfigError("--tta is part of the final evaluation, which --no-evaluate skips; drop one of them")
    if args.resume:
        preset, cfg, overrides = config_from_args(args)
        if overrides or args.preset:
            raise ConfigError("--resume continues a run with its own settings; drop the other training flags")
        train(cfg, "", resume=args.resume, device=args.device, quiet=args.quiet, data_dir=args.data_dir,
              evaluate=not args.no_evaluate, tta=args.tta)
        return 0
    preset, cfg, _ = config_from_args(args)
    train(cfg, args.dataset, preset=preset, data_dir=args.data_dir, out=args.out, name=args.name,
          device=args.device, quiet=args.quiet, command=command, evaluate=not args.no_evaluate, tta=args.tta)
    return 0
