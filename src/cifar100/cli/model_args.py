"""The model argument that predict, serve and export share: a run folder, a checkpoint file,
a weights folder, a URL to one, or `pretrained` (the model shipped with the package), which
`--pretrained` also names."""

from __future__ import annotations

MODEL_COMMANDS = ("predict", "serve", "export")
PRETRAINED_FLAG = "--pretrained"
MODEL_HELP = (
    "a run folder (uses checkpoints/best.pt), a checkpoint file, a weights folder from "
    "`cifar100 export --format safetensors`, an http(s) URL to one, or `pretrained` (the CIFAR-100 "
    "model shipped with cifar100; a folder of that name is ./pretrained)"
)


def add_model_arguments(p) -> None:
    p.add_argument(PRETRAINED_FLAG, action="store_true",
                   help="use the CIFAR-100 model that ships with cifar100, in place of MODEL")
    p.add_argument("--sha256", metavar="HEX",
                   help="the sha256 the weights file must have (checked before it is used; for a URL, before "
                   "the weights are downloaded)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="which checkpoint of a run folder")


def expand_pretrained_flag(argv: list[str]) -> list[str]:
    """`predict --pretrained photo.jpg` -> `predict pretrained photo.jpg`: the flag stands for
    the MODEL positional, so argparse sees the same positionals either way (and options may
    sit between MODEL and the paths, which one catch-all positional would not allow)."""
    end = argv.index("--") if "--" in argv else len(argv)
    command = next((i for i, a in enumerate(argv[:end]) if not a.startswith("-")), None)
    if command is None or argv[command] not in MODEL_COMMANDS or PRETRAINED_FLAG not in argv[command:end]:
        return argv
    from cifar100.model_files import PRETRAINED

    rest = [a for a in argv[command + 1 : end] if a != PRETRAINED_FLAG]
    return argv[: command + 1] + [PRETRAINED] + rest + argv[end:]
