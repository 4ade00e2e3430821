"""`cifar100 compare`: several runs' histories in one figure and their headline numbers."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        description="Overlay the training histories of run folders in one figure (validation solid, "
        "training dashed) and print a table of their headline numbers (test numbers from each run's "
        "metrics.json; run `cifar100 evaluate` first on a run that shows '-').",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (runs/<name>)")
    p.add_argument("--out", default="compare.png", help="the figure to write (default: compare.png)")
    p.set_defaults(func=run)


def run(args) -> int:
    from cifar100.evaluation.compare import compare_runs, format_table

    runs, figure = compare_runs(args.runs, args.out)
    print(format_table(runs))
    print(f"wrote {figure}")
    return 0
