"""Where a trained model can come from, read into one checkpoint-shaped payload (checkpoint.py):
a run folder (its best.pt, else last.pt), a checkpoint file, a weights folder (weights.py), a
URL to one, or `pretrained`, the model that ships inside the package (a folder of that name is
`./pretrained`). Inference, export and fine-tuning all start here, so each of them takes every
kind of source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifar100.checkpoint import load_checkpoint
from cifar100.errors import CheckpointError
from cifar100.runs import resolve_checkpoint, run_of_checkpoint
from cifar100.weights import (WEIGHTS_FILE, fetch_weights_folder, is_url, is_weights_folder, normalise_sha256,
                              read_weights_folder, sha256_of_bytes)

# The CIFAR-100 model trained by the cpu preset, shipped in the package (see its README.md).
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
DEFAULT_PRETRAINED = "cifar100-cpu"
PRETRAINED = "pretrained"  # the source name of the shipped model


@dataclass
class ModelSource:
    payload: dict[str, Any]  # as checkpoint.py describes it
    path: Path  # the file the weights came from
    run_dir: Path | None  # the run folder, when they came from one


def pretrained_folder(name: str = DEFAULT_PRETRAINED) -> Path:
    """The weights folder of a model shipped with the package."""
    shipped = sorted(p.name for p in PRETRAINED_DIR.iterdir() if is_weights_folder(p)) if PRETRAINED_DIR.is_dir() else []
    if name not in shipped:
        raise CheckpointError(f"no shipped model named {name!r}; shipped: {', '.join(shipped) or 'none'}")
    return PRETRAINED_DIR / name


def read_model(
    source: str | Path,
    which: str = "best",
    *,
    sha256: str | None = None,
    cache_dir: str | Path | None = None,
    quiet: bool = False,
) -> ModelSource:
    """The payload of `source`. `sha256`: what the weights file must hash to (a weights folder's
    model.safetensors, or a checkpoint file). `cache_dir`: where a URL's folder is kept
    (default: the dataset cache, $CIFAR100_DATA or ~/.cache/cifar100)."""
    if str(source) == PRETRAINED:
        source = pretrained_folder()
    if is_url(source):
        from cifar100.data.sources import default_data_dir

        source = fetch_weights_folder(str(source), cache_dir or default_data_dir(), sha256, quiet=quiet)
    path = Path(source).expanduser()
    if is_weights_folder(path):
        return ModelSource(read_weights_folder(path, sha256), path / WEIGHTS_FILE, None)
    checkpoint = resolve_checkpoint(path, which)
    if sha256 is not None:
        data = checkpoint.read_bytes()
        if sha256_of_bytes(data) != normalise_sha256(sha256):
            raise CheckpointError(f"{checkpoint} has sha256 {sha256_of_bytes(data)}, not the expected {sha256}")
        # The bytes that were checked are the bytes loaded.
        return ModelSource(load_checkpoint(checkpoint, data=data), checkpoint, run_of_checkpoint(checkpoint))
    return ModelSource(load_checkpoint(checkpoint), checkpoint, run_of_checkpoint(checkpoint))


def recorded_source(source: str | Path) -> str:
    """How a run records the model it started from, so `--resume` finds it from any folder:
    a local path made absolute; a URL or `pretrained` as given."""
    source = str(source)
    return source if source == PRETRAINED or is_url(source) else str(Path(source).expanduser().resolve())
