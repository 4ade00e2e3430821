"""`cifar100 presets`: each preset's model, parameter count and forward FLOPs per image."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "presets",
        description="List the training presets with their model, parameter count and forward FLOPs per 32x32 image.",
    )
    p.add_argument("--classes", type=int, default=100, help="size of the classifier head (default 100)")
    p.add_argument("--show", metavar="PRESET", help="print every field of one preset")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from cifar100.training.models import count_parameters, create_model, forward_flops
    from cifar100.training.presets import PRESETS, get_preset

    if args.show:
        print(json.dumps(get_preset(args.show).to_dict(), indent=2))
        return 0
    header = f"{'preset':<11} {'model':<34} {'params':>8} {'MFLOPs':>8} {'epochs':>6} {'batch':>6}  description"
    print(header)
    print("-" * len(header))
    for name, cfg in PRESETS.items():
        net = create_model(cfg.model, **{**cfg.model_kwargs, "num_classes": args.classes})
        shape = ",".join(str(w) for w in cfg.model_kwargs.get("widths", []))
        convs = cfg.model_kwargs.get("convs_per_stage")
        depth = "" if convs is None else "x" + ("/".join(map(str, convs)) if isinstance(convs, list) else str(convs))
        model = f"{cfg.model}[{shape}]{depth}"
        print(
            f"{name:<11} {model:<34} {count_parameters(net) / 1e6:>7.2f}M {forward_flops(net) / 1e6:>8.1f} "
            f"{cfg.epochs:>6} {cfg.batch_size:>6}  {cfg.description}"
        )
    return 0
