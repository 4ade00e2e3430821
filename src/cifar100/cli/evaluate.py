"""`cifar100 evaluate`: metrics, figures and the HTML report of a run folder or checkpoint."""

from __future__ import annotations


def register(subparsers) -> None:
    from cifar100.devices import DEVICE_CHOICES

    p = subparsers.add_parser(
        "evaluate",
        description="Evaluate a run folder (its best checkpoint, or last.pt for a run interrupted before "
        "its first best) or a checkpoint file on the test split and the run's validation split. Writes "
        "metrics.json, plots/*.png and report.html into the run folder (a checkpoint file: into "
        "<name>-evaluation/ beside it, or --out) and prints a short table.",
    )
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run folder (runs/<name>) or a .pt checkpoint")
    p.add_argument("--which", choices=["best", "last"], default="best",
                   help="which checkpoint of a run folder (default: best, the best validation accuracy)")
    p.add_argument("--tta", action="store_true",
                   help="also report accuracy with test-time augmentation (6 flipped and shifted views), as separate rows")
    p.add_argument("--data-dir", help="dataset cache (default: the run's, else $CIFAR100_DATA or ~/.cache/cifar100)")
    p.add_argument("--device", default="auto", metavar="{" + ",".join(DEVICE_CHOICES) + "}",
                   help="where to run the model (default: auto: cuda, then mps, then cpu)")
    p.add_argument("--out", help="write metrics.json, plots/ and report.html here instead")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)


def run(args) -> int:
    from cifar100.devices import resolve_device
    from cifar100.evaluation.evaluate import evaluate_run

    evaluate_run(args.run, which=args.which, tta=args.tta, data_dir=args.data_dir,
                 device=resolve_device(args.device), out_dir=args.out, quiet=args.quiet)
    return 0
