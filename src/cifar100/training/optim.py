"""How the weights move: the optimizers (SGD, Adam, and Muon for conv filters), the LR
schedule, and the two kinds of weight averaging (EMA, Lookahead). Each is a small piece the
training loop (training/trainer.py) composes according to the config."""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn

from cifar100.training.presets import TrainConfig


class EMA:
    """An exponential moving average of the weights, evaluated in place of the raw weights:
    it averages out the noise of the last steps (worth ~0.5-1 point on long runs)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.module.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1 - self.decay)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)


class Lookahead:
    """Slow weights that trail the trained ("fast") ones: every `every` steps the slow weights
    move part of the way to the fast ones and the fast ones are reset to them (the Lookahead
    optimizer, as airbench schedules it). The slow weights keep `decay` of themselves, and
    decay = base**every * progress**3 grows from 0 to base**every over the run: early on the
    model moves freely, at the end the last steps are averaged strongly, which is what a short
    run needs most. Starts at `start_step`; BatchNorm statistics are averaged with the weights."""

    def __init__(self, model: nn.Module, every: int, start_step: int, total_steps: int, base: float = 0.95):
        self.every, self.start_step, self.total_steps, self.base = every, max(1, start_step), max(1, total_steps), base
        self.tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.slow: list[torch.Tensor] | None = None

    def _due(self, step: int) -> bool:
        return step >= self.start_step and step % self.every == 0

    @torch.no_grad()
    def step(self, step: int) -> None:
        """After optimizer step number `step` (1-based over the whole run)."""
        if not self._due(step):
            return
        if self.slow is None:
            self.slow = [t.detach().clone() for t in self.tensors]
            return
        decay = self.base**self.every * (step / self.total_steps) ** 3
        torch._foreach_lerp_(self.slow, self.tensors, 1 - decay)
        torch._foreach_copy_(self.tensors, self.slow)

    @torch.no_grad()
    def sync(self) -> None:
        """End of an epoch: the model takes the slow weights, so evaluation and checkpoints see
        them (the fast weights' last few steps are dropped, as in Lookahead)."""
        if self.slow is not None:
            torch._foreach_copy_(self.tensors, self.slow)

    def resume(self, steps_done: int) -> None:
        """After loading a checkpoint written at the end of step `steps_done`: the saved weights
        are the slow weights (sync ran before the save), so they need no separate storage."""
        first_due = -(-self.start_step // self.every) * self.every
        if steps_done >= first_due:
            self.slow = [t.detach().clone() for t in self.tensors]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Parameter groups, each with its peak LR from the config (the schedule scales them all
    alike). The first group is always the one at cfg.lr: the history's `lr` column and the
    progress line report it. Weight decay on conv/linear weights only: decaying BatchNorm
    shifts and biases only hurts."""
    params = [p for p in model.parameters() if p.requires_grad]
    biases = {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr": cfg.lr * cfg.bias_lr_scale}
    if cfg.optimizer == "muon":
        filters = {"params": [p for p in params if p.ndim == 4], "weight_decay": 0.0,
                   "lr": cfg.muon_lr, "momentum": cfg.muon_momentum, "orthogonalize": True}
        others = {"params": [p for p in params if p.ndim > 1 and p.ndim != 4],  # the linear head
                  "weight_decay": cfg.weight_decay, "lr": cfg.lr}
        groups = [others, filters, biases]
    else:
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay, "lr": cfg.lr},
                  biases]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "muon":
        return Muon(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def orthogonalize(update: torch.Tensor, steps: int = 3) -> torch.Tensor:
    """An approximation of U V^T, where U S V^T is the SVD of `update` flattened to
    (out_channels, fan_in): every direction the gradient points in gets a step of about the
    same size, instead of the few dominant ones taking nearly all of it. A quintic Newton-Schulz
    iteration (the Muon optimizer's, with its coefficients, which push singular values towards
    1 fast rather than exactly: all but the tiniest land in roughly [0.7, 1.2], which trains as
    well as exact U V^T); three matmul-only iterations, a small share of a training step."""
    x = update.reshape(len(update), -1).float()
    wide = x.size(0) <= x.size(1)
    if not wide:
        x = x.T  # iterate on the smaller Gram matrix
    x = x / (x.norm() + 1e-7)  # Frobenius >= spectral norm: singular values start in [0, 1]
    a, b, c = 3.4445, -4.7750, 2.0315
    for _ in range(steps):
        gram = x @ x.T
        # x <- a x + (b G + c G^2) x, as two fused multiply-adds (addmm): no temporaries for
        # the scalar products.
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x if wide else x.T).reshape(update.shape)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum, where groups marked `orthogonalize` (the conv filters) take
    orthogonalised steps instead: Muon, as the CIFAR-10 speedrun uses it. Every such filter
    feeds a BatchNorm, so its scale is meaningless to the network: it is held at norm
    sqrt(out_channels) before each step, which makes the step size a fixed fraction of the
    weights (and weight decay on them pointless, so they get none). Other groups (biases,
    the linear head) are plain SGD with momentum and L2 weight decay, computed exactly as
    torch.optim.SGD computes them."""

    def __init__(self, params, lr: float, momentum: float = 0.9, nesterov: bool = True):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=0.0,
                                      orthogonalize=False))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ARG002 (the Optimizer signature)
        # Each group's elementwise updates run as a few multi-tensor (_foreach) calls rather
        # than a Python loop of small ops per parameter (the cpu preset has ~30 parameters,
        # most of them tiny BatchNorm shifts). With the fused iteration below: 21.5 ms per
        # optimizer step against 23.5 ms, of a ~400 ms training step.
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, momentum, nesterov = group["lr"], group["momentum"], group["nesterov"]
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            bufs = []
            for p, grad in zip(params, grads):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads)
            steps = torch._foreach_add(grads, bufs, alpha=momentum) if nesterov else bufs
            if group["orthogonalize"]:
                norms = torch._foreach_norm(params)
                torch._foreach_mul_(params, [math.sqrt(len(p)) / (n + 1e-12) for p, n in zip(params, norms)])
                steps = [orthogonalize(step) for step in steps]
            torch._foreach_add_(params, steps, alpha=-lr)


def step_schedule(
    kind: str, total_steps: int, warmup_steps: int, start: float = 0.0, end: float = 0.0
) -> Callable[[int], float]:
    """LR factor per optimizer step. onecycle: linear warm-up from `start` to 1, then linear
    decay to `end` (the speedrun schedule: a short high-LR phase, then annealing; airbench
    starts at 0.2 and ends at 0.07, leaving the last of the averaging to Lookahead);
    linear: decay from the peak to `end`; cosine: the same warm-up, then cosine decay to `end`;
    constant: the peak throughout (plateau builds on it).
    A pure function of the step, never saved: on resume the schedule always follows the run's
    current config."""
    total = max(1, total_steps)
    warmup = warmup_steps if kind in ("onecycle", "cosine") else 0

    def factor(step: int) -> float:
        if step < warmup:
            return start + (1 - start) * (step + 1) / warmup
        if kind in ("constant", "plateau"):
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "cosine":
            return end + (1.0 - end) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - (1.0 - end) * progress

    return factor


class Plateau:
    """Keras's ReduceLROnPlateau: after `patience` epochs in a row in which the monitored loss
    did not improve on its best by more than `min_delta`, the LR is multiplied by `factor`
    (Keras's defaults and semantics, so the keras-seed baseline reproduces the notebook)."""

    def __init__(self, patience: int, factor: float, min_delta: float):
        self.patience, self.factor, self.min_delta = patience, factor, min_delta
        self.scale, self.best, self.wait = 1.0, math.inf, 0

    def update(self, loss: float) -> None:
        if loss < self.best - self.min_delta:
            self.best, self.wait = loss, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.scale *= self.factor
            self.wait = 0

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scale, self.best, self.wait = state["scale"], state["best"], int(state["wait"])


class LearningRate:
    """The one owner of the learning rate. Before every optimizer step, each parameter group's
    LR is set to its peak (what `build_optimizer` gave it, from the config) x the schedule's
    factor at that step x the plateau's scale (1 unless schedule="plateau"). Nothing else writes
    an LR, so the LR the history logs is the LR the steps used, and a plateau's cut lasts."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
        self.optimizer = optimizer
        self.peaks = [group["lr"] for group in optimizer.param_groups]
        self.factor = step_schedule(cfg.schedule, steps_per_epoch * cfg.epochs,
                                    round(cfg.warmup_epochs * steps_per_epoch), cfg.lr_start, cfg.lr_end)
        self.plateau = Plateau(cfg.plateau_patience, cfg.plateau_factor, cfg.plateau_min_delta) if cfg.schedule == "plateau" else None
        self.apply(0)

    def apply(self, step: int) -> None:
        """Set every group's LR for optimizer step `step` (0-based over the whole run)."""
        scale = self.factor(step) * (self.plateau.scale if self.plateau else 1.0)
        for group, peak in zip(self.optimizer.param_groups, self.peaks):
            group["lr"] = peak * scale

    def end_epoch(self, monitored_loss: float) -> None:
        if self.plateau:
            self.plateau.update(monitored_loss)

    @property
    def current(self) -> float:
        """The LR of the first group (the one at cfg.lr) as last applied."""
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"plateau": self.plateau.state_dict() if self.plateau else None}

    def load_state_dict(self, state: dict) -> None:
        if self.plateau and state.get("plateau"):
            self.plateau.load_state_dict(state["plateau"])
