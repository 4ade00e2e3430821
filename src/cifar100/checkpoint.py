"""Checkpoints are plain data: a dict of tensors, numbers, strings and lists, saved atomically
and loaded with `torch.load(weights_only=True)`, so a crafted file cannot run code.

Layout (FORMAT_VERSION 1):
    format: "cifar100-checkpoint", format_version: 1
    model: {"arch": str, "kwargs": dict}        -> models.create_model(arch, **kwargs)
    weights: state_dict of the network to evaluate (the EMA weights when EMA is on)
    classes, coarse_classes (or None), fine_to_coarse (or None)
    dataset: {"spec": str, "name": str, "test_size": float, "split_seed": int, "center_crop": bool,
              "val_size": float, "val_from": "folder" | "train", ...}  (sources.load_recorded_dataset)
    normalization: {"mean": [r, g, b], "std": [r, g, b]}  on the 0..1 pixel scale
    epoch: int, metrics: {"val_acc": float, "val_loss": float, ...}
    temperature: float  the logits' divisor fitted on the validation split (absent in older
                 checkpoints: read as 1.0)
    train_state: (last.pt only) raw weights (with EMA), optimizer, LR schedule, grad scaler, history, best
                 epoch, elapsed time: what --resume needs (randomness is a function of seed and epoch)
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from cifar100.errors import CheckpointError
from cifar100.fileio import atomic_torch_save

FORMAT = "cifar100-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    return atomic_torch_save(path, payload)


def load_checkpoint(path: str | Path, map_location: str = "cpu", data: bytes | None = None) -> dict[str, Any]:
    """The payload of the checkpoint at `path` (or of its bytes `data`, already read and
    verified by the caller; `path` then only names it in messages)."""
    import io

    import torch

    path = Path(path)
    if data is None:
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        data = path.read_bytes()
    if len(data) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        # torch.save writes a zip archive; anything else is another kind of file or a cut one.
        raise CheckpointError(f"{path} is not a checkpoint file (not a PyTorch archive; truncated or another kind of file)")
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global that is not plain data: a file that tries to run
        # code (or was saved from arbitrary objects) ends here.
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain-data checkpoint (it would need to run code "
            f"or build arbitrary objects to load). Details: {str(exc).splitlines()[0]}"
        ) from None
    except Exception as exc:  # torch raises many kinds (RuntimeError, KeyError, EOFError...) on a damaged archive
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cifar100 checkpoint")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this cifar100 reads version {FORMAT_VERSION}"
        )
    return payload
