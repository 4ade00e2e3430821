"""The model argument that predict, serve and export share: a run folder, a checkpoint file,
a weights folder, a URL to one, or `--pretrained` (the model shipped with the package)."""

from __future__ import annotations

MODEL_HELP = (
    "a run folder (uses checkpoints/best.pt), a checkpoint file, a weights folder from "
    "`cifar100 export --format safetensors`, or an http(s) URL to one"
)


def add_model_arguments(p) -> None:
    p.add_argument("--pretrained", action="store_true",
                   help="use the CIFAR-100 model that ships with cifar100 (no MODEL argument then)")
    p.add_argument("--sha256", metavar="HEX",
                   help="the sha256 the weights file must have (checked before it is used; for a URL, before it is downloaded)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="which checkpoint of a run folder")


def model_source(args, positionals: list[str]) -> tuple[str, list[str]]:
    """(the model source, the positional arguments left for the command). With --pretrained
    every positional belongs to the command; otherwise the first one names the model."""
    from cifar100.errors import ConfigError
    from cifar100.model_files import pretrained_folder

    if args.pretrained:
        return str(pretrained_folder()), positionals
    if not positionals:
        raise ConfigError("name the model (a run folder, checkpoint, weights folder or URL), or pass --pretrained")
    return positionals[0], positionals[1:]
