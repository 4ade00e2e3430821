"""The `cifar100` command line. Each sub-command lives in `cifar100.cli.<name>` and exposes
`register(subparsers)`, which adds its parser and sets `func`; its one-line summary is kept
here, in COMMANDS, the only place the list of commands is shown. Only the module of the command
being run is imported, so `cifar100 --help` stays quick and one command's heavy dependencies
(torch, matplotlib, onnxruntime, FastAPI) never slow down another."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from cifar100 import __version__
from cifar100.cli.model_args import expand_pretrained_flag
from cifar100.errors import Cifar100Error

COMMANDS = {
    "data": "download a dataset, verify it, and show its statistics",
    "presets": "list the training presets: model, parameters, FLOPs per image",
    "train": "train a model and write a run folder",
    "evaluate": "metrics, figures and an HTML report for a run or checkpoint",
    "compare": "overlay the histories and headline numbers of several runs",
    "predict": "classify your own images with a trained model",
    "export": "export a trained model to ONNX, TorchScript, or a safetensors weights folder to share",
    "serve": "a web page and JSON API to try a trained model",
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The full parser of `selected` (the command being run), one-line entries for the rest."""
    parser = argparse.ArgumentParser(
        prog="cifar100",
        description="Train our own CNN on CIFAR-100 (or CIFAR-10, or your image folder), "
        "see how training went, evaluate it honestly, and use it on your own photos.",
    )
    parser.add_argument("--version", action="version", version=f"cifar100 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if name == selected:
            importlib.import_module(f"cifar100.cli.{name}").register(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `docker stop`, a batch scheduler's pre-emption), raised where the
    program is so it stops the way Ctrl-C does: training prints its resume command."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    argv = expand_pretrained_flag(argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    try:
        return int(args.func(args) or 0)
    except Cifar100Error as exc:
        print(f"cifar100: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("cifar100: interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130  # 128 + the signal, as shells report it
    except BrokenPipeError:
        # The reader went away (`cifar100 predict ... | head`): stop quietly, like other tools.
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)  # main() called in-process leaves no trace


if __name__ == "__main__":
    raise SystemExit(main())
