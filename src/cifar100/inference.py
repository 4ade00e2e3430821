"""A trained model ready to use: the network with its normalisation built in, its class
names, and where it came from. Shared by evaluate, predict, export and serve."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cifar100.errors import CheckpointError
from cifar100.model_files import read_model
from cifar100.training.models import create_model


def as_input(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float (N, 3, H, W) on the 0..1 scale: what a Classifier takes."""
    return torch.as_tensor(images).to(device).permute(0, 3, 1, 2).float().div_(255)


class Classifier(nn.Module):
    """Takes RGB images as float (N, 3, H, W) on the 0..1 scale, returns calibrated logits: the
    per-channel normalisation and the temperature (calibration.py) are part of the module, so
    exported models carry them too."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float], temperature: float = 1.0):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std) / self.temperature


@dataclass
class LoadedModel:
    classifier: Classifier
    classes: list[str]
    coarse_classes: list[str] | None
    fine_to_coarse: list[int] | None
    dataset: dict[str, Any]
    checkpoint_path: Path
    run_dir: Path | None
    epoch: int
    metrics: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)
    # A weights folder's config.json (its provenance and recorded test metrics); None for a checkpoint.
    weights_config: dict[str, Any] | None = None

    @property
    def temperature(self) -> float:
        """The logits' divisor fitted on the validation split (1.0: not calibrated)."""
        return float(self.classifier.temperature)

    def derived_path(self, suffix: str) -> Path:
        """Where something made from a model outside a run folder goes by default: beside its
        checkpoint file; for a weights folder (the package's own, or a download in the cache,
        neither of them the user's to write into), in the current folder."""
        if self.weights_config is not None:
            return Path.cwd() / f"{self.checkpoint_path.parent.name}{suffix}"
        return self.checkpoint_path.with_name(self.checkpoint_path.stem + suffix)

    @property
    def center_crop(self) -> bool:
        """How photos become this model's 32x32 inputs: centre-cropped (True) or squashed, as its
        training images were (image folders with center_crop=false)."""
        return bool(self.dataset.get("center_crop", True))

    @property
    def mean(self) -> list[float]:
        return self.classifier.mean.flatten().tolist()

    @property
    def std(self) -> list[float]:
        return self.classifier.std.flatten().tolist()

    @property
    def device(self) -> torch.device:
        return self.classifier.mean.device

    def logits(self, images: np.ndarray | torch.Tensor, batch_size: int = 500, tta: bool = False) -> torch.Tensor:
        """images: uint8 (N, 32, 32, 3). Returns float32 logits (N, classes) on the CPU.
        With tta, six views are averaged (see `tta_logits`)."""
        if tta:
            return self.plain_and_tta_logits(images, batch_size)[1]
        return self._batched(images, batch_size, lambda batch: (self.classifier(batch),))[0]

    def plain_and_tta_logits(self, images: np.ndarray | torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """(plain, test-time-augmented) logits from one pass: the plain view is one of TTA's six,
        so an evaluation that reports both runs the network 6 times per image, not 7."""

        def both(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            plain = self.classifier(batch)
            return plain, tta_logits(self.classifier, batch, plain=plain)

        return self._batched(images, batch_size, both)

    @torch.no_grad()
    def _batched(self, images, batch_size: int, fn) -> tuple[torch.Tensor, ...]:
        """Apply `fn` (a batch of inputs -> a tuple of logits) to `images` in batches; float32 on the CPU."""
        x = torch.as_tensor(images)
        parts: list[tuple[torch.Tensor, ...]] = []
        for start in range(0, len(x), batch_size):
            parts.append(tuple(out.float().cpu() for out in fn(as_input(x[start : start + batch_size], self.device))))
        if not parts:
            return (torch.zeros(0, len(self.classes)),) * 2
        return tuple(torch.cat(column) for column in zip(*parts, strict=True))

    def probabilities(self, images: np.ndarray | torch.Tensor, batch_size: int = 500, tta: bool = False) -> np.ndarray:
        return torch.softmax(self.logits(images, batch_size, tta), dim=1).numpy()


TTA_DESCRIPTION = (
    "flip and shift: the mean logits of each image and its mirror image count half, those of the "
    "image shifted one pixel up-left and down-right (reflect padding), each with its mirror image, a quarter each"
)


def tta_logits(model: nn.Module, x: torch.Tensor, plain: torch.Tensor | None = None) -> torch.Tensor:
    """Test-time augmentation over six views of NCHW inputs, weighted as the training
    augmentation makes them likely: unshifted views count as much as the two shifted ones.
    `plain`: model(x), when the caller has it already."""

    def mirrored(v: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        return 0.5 * ((model(v) if logits is None else logits) + model(v.flip(3)))

    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    shifted = 0.5 * (mirrored(padded[..., :h, :w]) + mirrored(padded[..., 2:, 2:]))
    return 0.5 * (mirrored(x, plain) + shifted)


def load_model(source: str | Path, which: str = "best", device: str | torch.device = "cpu", *,
               sha256: str | None = None, quiet: bool = False) -> LoadedModel:
    """Load a model for inference from a run folder (its best.pt, else last.pt), a checkpoint
    file, a weights folder or a URL to one (model_files.read_model; `sha256`: what the weights
    file must hash to)."""
    found = read_model(source, which, sha256=sha256, quiet=quiet)
    payload, path = found.payload, found.path
    try:
        classifier = build_classifier(payload).to(device).eval()
        classes = list(payload["classes"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} does not match its model description: {exc}") from None
    return LoadedModel(
        classifier=classifier,
        classes=classes,
        coarse_classes=payload.get("coarse_classes"),
        fine_to_coarse=payload.get("fine_to_coarse"),
        dataset=dict(payload.get("dataset") or {}),
        checkpoint_path=path,
        run_dir=found.run_dir,
        epoch=int(payload.get("epoch") or 0),
        metrics=dict(payload.get("metrics") or {}),
        model_config=dict(payload["model"]),
        weights_config=payload.get("weights_config"),
    )


def build_classifier(payload: dict[str, Any]) -> Classifier:
    """The Classifier (on the CPU, in eval mode) a checkpoint-shaped payload describes."""
    spec = payload["model"]
    net = create_model(spec["arch"], **spec["kwargs"])
    net.load_state_dict(payload["weights"])
    norm = payload["normalization"]
    # Checkpoints from before calibration have none: their logits are used as they are.
    temperature = float(payload.get("temperature", 1.0))
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return Classifier(net, norm["mean"], norm["std"], temperature).eval()
