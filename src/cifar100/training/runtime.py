"""Where training runs: the device, the process group under torchrun (DistributedDataParallel),
and the process-wide settings that make a CPU or GPU run fast."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from cifar100.devices import resolve_device
from cifar100.memory import keep_freed_memory


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def start_runtime(device_name: str = "auto") -> Runtime:
    """Under torchrun (WORLD_SIZE > 1) join the process group: NCCL on GPUs, gloo on CPUs."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world_size == 1:
        rt = Runtime(device)
    else:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        rt = Runtime(device, dist.get_rank(), world_size, local_rank)
    if device.type == "cpu":
        # One process per core group: processes on one machine share its cores.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(rt.world_size if rt.distributed else 1)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        keep_freed_memory()
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return rt


def compile_or_eager(model: nn.Module, example: torch.Tensor, backend: str | Callable = "inductor") -> tuple[nn.Module, bool]:
    """torch.compile where it works, else the model as it is with a one-line warning: some
    GPUs, drivers or missing compilers make the first compiled call fail. The trial call runs
    in eval mode without gradients, so it changes no weight and no BatchNorm statistic."""
    compiled = torch.compile(model, backend=backend)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            compiled(example)
    except Exception as exc:  # noqa: BLE001 - compilers raise every kind of error
        root = exc
        for _ in range(10):  # dynamo wraps the backend's own error, maybe more than once
            inner = root.__cause__ or getattr(root, "inner_exception", None)
            if inner is None or inner is root:
                break
            root = inner
        reason = (str(root).strip().splitlines() or [""])[0][:200]
        print(f"warning: torch.compile failed ({type(root).__name__}: {reason}); training without it", file=sys.stderr)
        return model, False
    finally:
        model.train(was_training)
    return compiled, True
