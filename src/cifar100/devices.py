"""Which device and which number format a command runs on, chosen the same way everywhere
(`--device` and `--precision` in every command, `device=` and `precision=` in the API).

    device    auto = cuda, then mps (Apple GPUs), then cpu
    precision auto = bf16 where the GPU computes it natively (CUDA compute capability 8.0 and
              up: A100, H100, RTX 30xx/40xx), fp16 with a gradient scaler on older CUDA GPUs
              (the T4 of free Colab and Kaggle is 7.5: bf16 there is emulated and slow), and
              fp32 on CPUs and Apple GPUs.

The choices are functions of what the machine reports, so they are tested without the hardware.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cifar100.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES = ("auto", "32", "bf16", "16")


def mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto", *, cuda: bool | None = None, mps: bool | None = None) -> torch.device:
    """`name` as a torch device; `cuda` and `mps` say what the machine has (asked of torch
    when not given)."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    mps = mps_available() if mps is None else mps
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {name!r}")
    if kind == "cuda" and not cuda:
        raise ConfigError("--device cuda was asked for, but PyTorch sees no CUDA GPU on this machine")
    if kind == "mps" and not mps:
        raise ConfigError("--device mps was asked for, but PyTorch sees no Apple GPU (MPS) on this machine")
    return torch.device(name)


@dataclass(frozen=True)
class Precision:
    name: str  # "32", "bf16" or "16"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        import torch

        return {"bf16": torch.bfloat16, "16": torch.float16}.get(self.name)

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16's narrow range underflows small gradients unless the loss is scaled up."""
        return self.name == "16"

    def describe(self) -> str:
        return {"32": "fp32", "bf16": "bf16 autocast", "16": "fp16 autocast with a gradient scaler"}[self.name]


def choose_precision(device: torch.device, requested: str = "auto", capability: tuple[int, int] | None = None) -> Precision:
    """The number format for training on `device`. `capability`: the CUDA GPU's compute
    capability (asked of torch when not given)."""
    requested = str(requested)
    if requested not in PRECISION_CHOICES:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISION_CHOICES)}, got {requested!r}")
    if device.type != "cuda":
        if requested in ("bf16", "16"):
            raise ConfigError(f"--precision {requested} needs a CUDA GPU; on {device.type} training runs in fp32")
        return Precision("32")
    if requested != "auto":
        return Precision(requested)
    if capability is None:
        import torch

        capability = torch.cuda.get_device_capability(device)
    major, _ = capability
    return Precision("bf16" if major >= 8 else "16")


def describe_device(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU (MPS, {platform.machine()})"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
