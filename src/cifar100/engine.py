"""The one training loop, for every preset, on CPU, one GPU or many (torchrun).

What it writes (rank 0 only): config.json before the first step, history.csv and
checkpoints/last.pt after every epoch, checkpoints/best.pt whenever validation accuracy
improves, metrics.json at the end. Every write is atomic, so an interruption at any moment
loses at most the epoch in progress, and `--resume` continues from last.pt exactly: weights,
optimizer, schedule, EMA and history are in the checkpoint, and every epoch's randomness is
derived from (seed, epoch)."""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from cifar100 import __version__
from cifar100.calibration import fit_temperature
from cifar100.checkpoint import load_checkpoint, save_checkpoint
from cifar100.datasets import Dataset, channel_mean_std, split_train_val
from cifar100.errors import CheckpointError, ConfigError, TrainingDiverged
from cifar100.fileio import atomic_write_text, read_json, write_json
from cifar100.loader import Augment, Batch, DeviceLoader
from cifar100.models import count_parameters, create_model
from cifar100.optim import EMA, LearningRate, Lookahead, build_optimizer
from cifar100.presets import TrainConfig

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


# ---------------------------------------------------------------------------------------------
# Devices and processes


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


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but PyTorch sees no CUDA GPU on this machine")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


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


def keep_freed_memory() -> None:
    """Tell glibc's malloc to keep freed memory instead of returning it to the OS. By default
    every activation buffer above its mmap threshold is mmap'ed and munmap'ed at each step, and
    touching fresh pages again costs a page fault per 4 KiB: on a 2-core CPU that was a quarter
    of the training time spent in the kernel."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc (macOS, musl): nothing to tune
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's upper limit on 64-bit; larger is refused
    mallopt(m_trim_threshold, (1 << 31) - 1)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------------------------
# Pieces of the loop


def mixed_loss(logits: torch.Tensor, batch: Batch, label_smoothing: float) -> torch.Tensor:
    loss = F.cross_entropy(logits, batch.labels, label_smoothing=label_smoothing)
    if batch.mix_labels is not None:
        other = F.cross_entropy(logits, batch.mix_labels, label_smoothing=label_smoothing)
        loss = batch.mix_weight * loss + (1 - batch.mix_weight) * other
    return loss


@torch.no_grad()
def split_logits(model: nn.Module, loader: DeviceLoader, autocast: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 logits and labels of a whole split, left on the device (no host sync)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for batch in loader.epoch():
        with autocast:
            logits.append(model(batch.inputs).float())
        labels.append(batch.labels)
    model.train(was_training)
    if not logits:
        return torch.zeros(0, 0, device=loader.device), torch.zeros(0, dtype=torch.long, device=loader.device)
    return torch.cat(logits), torch.cat(labels)


def score_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Plain cross-entropy (no smoothing) and top-1 accuracy."""
    if len(labels) == 0:
        return 0.0, 0.0
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


def evaluate_loader(model: nn.Module, loader: DeviceLoader, autocast: Any) -> tuple[float, float]:
    """Plain cross-entropy (no smoothing) and top-1 accuracy over a whole split."""
    return score_logits(*split_logits(model, loader, autocast))


def unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in unwrap(module).state_dict().items()}


# ---------------------------------------------------------------------------------------------
# The run folder


@dataclass
class RunFolder:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def last(self) -> Path:
        return self.root / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        return self.root / "checkpoints" / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    def prepare(self, checkpoint_bytes: int) -> None:
        """Fail before training, not after an hour, if the folder cannot hold the run."""
        try:
            (self.root / "checkpoints").mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"cannot write to the run folder {self.root}: {exc.strerror or exc}") from None
        # last.pt, best.pt and a temporary copy during each atomic write.
        need = 3 * checkpoint_bytes + (1 << 20)
        free = shutil.disk_usage(self.root).free
        if free < need:
            raise ConfigError(
                f"not enough free disk space for the run folder {self.root}: {free / 1e6:.1f} MB free, "
                f"about {need / 1e6:.1f} MB needed for the checkpoints"
            )

    def write_history(self, rows: list[dict[str, float]]) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in HISTORY_COLUMNS})
        atomic_write_text(self.history, out.getvalue())


def read_history(path: str | Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def default_run_name(dataset_name: str, preset: str) -> str:
    return f"{dataset_name}-{preset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = 0.0
    test_acc: float = float("nan")
    test_tta_acc: float = float("nan")  # only when the final evaluation ran with tta
    train_seconds: float = 0.0


class Trainer:
    """Holds everything one run needs; `fit()` runs the epochs. Built from a fresh config or
    from a run folder's last.pt (`--resume`)."""

    def __init__(
        self,
        cfg: TrainConfig,
        dataset: Dataset,
        run_dir: Path,
        runtime: Runtime,
        *,
        preset: str = "custom",
        data_dir: str | None = None,
        quiet: bool = False,
        command: str = "",
        resume: bool = False,
        on_epoch: Callable[["Trainer", dict[str, float]], None] | None = None,
    ):
        self.on_epoch = on_epoch  # called on rank 0 after each epoch's files are written
        self.cfg, self.dataset, self.rt, self.quiet = cfg.validate(), dataset, runtime, quiet
        self.run = RunFolder(Path(run_dir))
        self.preset, self.command = preset, command
        device = runtime.device
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

        train, val = split_train_val(dataset.train, cfg.val_size, seed=cfg.split_seed)
        if len(train) < cfg.batch_size * runtime.world_size and len(train) > 0:
            # A batch larger than the data would make every epoch a single partial step.
            cfg = self.cfg = cfg.with_overrides(batch_size=max(1, len(train) // runtime.world_size))
        self.mean, self.std = channel_mean_std(train.images)
        self.dataset_info = {
            "spec": dataset.spec, "name": dataset.name, "data_dir": data_dir,
            "val_size": cfg.val_size, "split_seed": cfg.split_seed, "num_classes": dataset.num_classes,
            "train_images": len(train), "val_images": len(val), "test_images": len(dataset.test),
        }
        channels_last = cfg.channels_last
        augment = Augment(cfg.translate, cfg.flip, cfg.cutout, cfg.mixup_alpha, cfg.cutmix_alpha)
        per_rank_batch = max(1, cfg.batch_size // runtime.world_size)
        self.train_loader = DeviceLoader(
            train, per_rank_batch, device, self.mean, self.std, augment, shuffle=True, drop_last=True,
            seed=cfg.seed, rank=runtime.rank, world_size=runtime.world_size, channels_last=channels_last,
        )
        eval_batch = max(500, per_rank_batch)
        self.val_loader = DeviceLoader(val, eval_batch, device, self.mean, self.std, channels_last=channels_last)
        self.test_loader = DeviceLoader(dataset.test, eval_batch, device, self.mean, self.std, channels_last=channels_last)
        if len(self.train_loader) == 0:
            raise ConfigError(f"the training split has {len(train)} images: too few for one batch")

        torch.manual_seed(cfg.seed)
        self.model_spec = {"arch": cfg.model, "kwargs": {**cfg.model_kwargs, "num_classes": dataset.num_classes}}
        net = create_model(cfg.model, **self.model_spec["kwargs"])
        if getattr(net, "whiten", None) is not None and not resume:
            # Fitted on batches made exactly as training makes them (the loader's normalisation).
            sample = train.subset(np.arange(min(5000, len(train))))
            net.whiten.fit(next(DeviceLoader(sample, 5000, torch.device("cpu"), self.mean, self.std).epoch()).inputs)
        net = net.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        self.net = net
        self.ema = EMA(net, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.steps_per_epoch = len(self.train_loader)
        total = self.steps_per_epoch * cfg.epochs
        self.lookahead = (
            Lookahead(net, cfg.lookahead_every, round(cfg.lookahead_start_epochs * self.steps_per_epoch), total)
            if cfg.lookahead_every > 0 else None
        )
        self.optimizer = build_optimizer(net, cfg)
        self.learning_rate = LearningRate(self.optimizer, cfg, self.steps_per_epoch)
        model: nn.Module = net
        if runtime.distributed:
            model = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None
            )
        if cfg.compile and device.type == "cuda":
            model = torch.compile(model)
        self.model = model
        self.history: list[dict[str, float]] = []
        self.start_epoch = 1
        self.best_val_acc, self.best_epoch = -1.0, 0
        self.elapsed = 0.0
        self.temperature = 1.0

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema else self.model

    # -- checkpoints ---------------------------------------------------------------------

    def _payload(self, epoch: int, metrics: dict[str, float], with_train_state: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model_spec,
            "weights": cpu_state(self.eval_model),
            "classes": list(self.dataset.classes),
            "coarse_classes": self.dataset.coarse_classes,
            "fine_to_coarse": self.dataset.fine_to_coarse,
            "dataset": self.dataset_info,
            "normalization": {"mean": self.mean, "std": self.std},
            "epoch": epoch,
            "metrics": metrics,
            # Fitted on the validation split at this epoch (1.0 without one): see calibration.py.
            "temperature": self.temperature,
            "config": self.cfg.to_dict(),
        }
        if with_train_state:
            payload["train_state"] = {
                # The raw weights, where they differ from `weights` (the EMA's); else `weights` are them.
                "model": cpu_state(self.net) if self.ema else None,
                "optimizer": self.optimizer.state_dict(),
                "lr_schedule": self.learning_rate.state_dict(),
                "history": self.history,
                "best_val_acc": self.best_val_acc,
                "best_epoch": self.best_epoch,
                "elapsed": self.elapsed,
            }
        return payload

    def load_train_state(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("train_state")
        if state is None:
            raise CheckpointError("this checkpoint holds no training state (best.pt?); resume from last.pt")
        if checkpoint.get("model") != self.model_spec:
            raise CheckpointError(
                f"the checkpoint's model {checkpoint.get('model')} does not match this run's {self.model_spec}"
            )
        self.net.load_state_dict(checkpoint["weights"] if state["model"] is None else state["model"])
        # config.json is the truth for settings: the LR's peaks were built from it (any of them
        # edited there) and the optimizer state's LRs are overwritten before every step.
        self.optimizer.load_state_dict(state["optimizer"])
        self.learning_rate.load_state_dict(state.get("lr_schedule", {}))
        if self.ema:
            self.ema.module.load_state_dict(checkpoint["weights"])
        self.history = list(state["history"])
        self.best_val_acc, self.best_epoch = state["best_val_acc"], state["best_epoch"]
        self.elapsed = state["elapsed"]
        self.start_epoch = int(checkpoint["epoch"]) + 1
        if self.lookahead:
            self.lookahead.resume(int(checkpoint["epoch"]) * self.steps_per_epoch)

    # -- the loop ------------------------------------------------------------------------

    def write_config(self) -> None:
        write_json(self.run.config, {
            "name": self.run.root.name,
            "preset": self.preset,
            "config": self.cfg.to_dict(),
            "dataset": self.dataset_info,
            "seed": self.cfg.seed,
            "device": device_description(self.rt.device),
            "world_size": self.rt.world_size,
            "model": {**self.model_spec, "parameters": count_parameters(self.net)},
            "versions": {
                "cifar100": __version__, "torch": torch.__version__, "numpy": np.__version__,
                "python": platform.python_version(),
            },
            "command": self.command,
            "started": datetime.now().isoformat(timespec="seconds"),
        })

    def fit(self) -> TrainResult:
        if self.rt.is_main:
            self.run.prepare(checkpoint_bytes=12 * count_parameters(self.net))
            if self.start_epoch == 1:
                self.write_config()
        progress = self._progress()
        saved_epoch = self.start_epoch - 1  # the epoch last.pt holds
        try:
            for epoch in range(self.start_epoch, self.cfg.epochs + 1):
                self._run_epoch(epoch, progress)
                saved_epoch = epoch
        except KeyboardInterrupt:
            if progress is not None:
                progress.close()
            if self.rt.is_main:
                held = f"{self.run.last} holds epoch {saved_epoch}" if saved_epoch else "no epoch had finished"
                print(f"\ninterrupted in epoch {saved_epoch + 1}; {held}. "
                      f"Continue with: cifar100 train --resume {self.run.root}", file=sys.stderr)
            raise
        if progress is not None:
            progress.close()
        self.rt.barrier()
        return TrainResult(self.run.root, self.history, self.best_epoch, self.best_val_acc, train_seconds=self.elapsed)

    def _run_epoch(self, epoch: int, progress) -> None:
        """Train one epoch, validate, then (rank 0) save best.pt if it improved, last.pt, and
        the history, in that order: each write is atomic, so a kill between them is harmless."""
        started = time.perf_counter()
        torch.manual_seed(self.cfg.seed * 1000 + epoch)  # dropout etc.: a function of (seed, epoch)
        train_loss, train_acc = self.train_epoch(epoch, progress)
        if self.val_loader.num_samples:
            val_logits, val_labels = split_logits(self.eval_model, self.val_loader, self.autocast)
            val_loss, val_acc = score_logits(val_logits, val_labels)
            # Saved with the weights: predict, serve and export divide the logits by it.
            self.temperature = fit_temperature(val_logits, val_labels)
        else:
            val_loss = val_acc = float("nan")
        self.learning_rate.end_epoch(train_loss if math.isnan(val_loss) else val_loss)
        seconds = time.perf_counter() - started
        self.elapsed += seconds
        row = {
            "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
            "val_acc": val_acc, "lr": self.learning_rate.current, "seconds": seconds,
        }
        self.history.append(row)
        # Without a validation split, selection falls back to training accuracy.
        score = train_acc if math.isnan(val_acc) else val_acc
        improved = score > self.best_val_acc
        if improved:
            self.best_val_acc, self.best_epoch = score, epoch
        if self.rt.is_main:
            metrics = {"val_acc": val_acc, "val_loss": val_loss, "train_acc": train_acc, "train_loss": train_loss}
            if improved:
                save_checkpoint(self.run.best, self._payload(epoch, metrics, with_train_state=False))
            save_checkpoint(self.run.last, self._payload(epoch, metrics, with_train_state=True))
            self.run.write_history(self.history)
            self._log_epoch(row, progress)
            if self.on_epoch:
                self.on_epoch(self, row)

    def train_epoch(self, epoch: int, progress=None) -> tuple[float, float]:
        """One epoch of optimizer steps; returns (mean train loss, train accuracy)."""
        cfg, device = self.cfg, self.rt.device
        model = self.model
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        first_bad = torch.full((), -1, device=device, dtype=torch.long)
        # On a GPU, reading a number back stalls the pipeline: sync ~10 times an epoch only.
        # On a CPU there is nothing to stall, so the bar and the NaN check run every step.
        sync_every = 1 if device.type == "cpu" else max(1, self.steps_per_epoch // 10)
        started = time.perf_counter()
        small = cfg.progressive_size and epoch <= cfg.progressive_epochs
        for i, batch in enumerate(self.train_loader.epoch(epoch, cfg.progressive_size if small else None)):
            step = (epoch - 1) * self.steps_per_epoch + i
            with self.autocast:
                logits = model(batch.inputs)
                loss = mixed_loss(logits.float(), batch, cfg.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
            self.learning_rate.apply(step)
            self.optimizer.step()
            if self.lookahead:
                self.lookahead.step(step + 1)
            if self.ema:
                self.ema.update(self.net)
            b = len(batch.labels)
            loss = loss.detach()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step + 1, first_bad)
            loss_sum += loss * b
            correct += (logits.detach().argmax(1) == batch.labels).sum()
            seen += b
            if (i + 1) % sync_every == 0 or i + 1 == self.steps_per_epoch:
                self._check_finite(first_bad, epoch)
                if progress is not None:
                    progress.set_description_str(f"epoch {epoch}/{cfg.epochs}", refresh=False)
                    rate = seen * self.rt.world_size / (time.perf_counter() - started)
                    progress.set_postfix_str(
                        f"loss {loss_sum.item() / seen:.3f} acc {correct.item() / seen:.1%} "
                        f"lr {self.learning_rate.current:.2e} {rate:,.0f} img/s",
                        refresh=False,
                    )
                    progress.update((i + 1) - progress.n + (epoch - 1) * self.steps_per_epoch)
        if self.lookahead:
            self.lookahead.sync()
        totals = torch.stack([loss_sum, correct.to(loss_sum.dtype), torch.tensor(float(seen), device=device)])
        if self.rt.distributed:
            dist.all_reduce(totals)
        loss_total, correct_total, n = totals.tolist()
        return loss_total / n, correct_total / n

    def _check_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        bad = int(first_bad.item())
        if bad >= 0:
            kept = f"{self.run.last} (epoch {epoch - 1})" if epoch > 1 else "no checkpoint (it failed in the first epoch)"
            raise TrainingDiverged(
                f"the training loss became NaN or infinite at step {bad} (epoch {epoch}); kept {kept}. "
                f"Try a lower --lr (now {self.cfg.lr:g}), --set grad_clip=1.0, or a smaller --batch-size."
            )

    def _progress(self):
        if self.quiet or not self.rt.is_main:
            return None
        from tqdm import tqdm

        total = self.steps_per_epoch * self.cfg.epochs
        return tqdm(
            total=total, initial=(self.start_epoch - 1) * self.steps_per_epoch, unit="step",
            dynamic_ncols=True, file=sys.stderr, leave=False,
            bar_format="{desc} {bar} {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}]{postfix}",
            desc=f"epoch {self.start_epoch}/{self.cfg.epochs}",
        )

    def _log_epoch(self, row: dict[str, float], progress) -> None:
        if self.quiet:
            return
        line = (
            f"epoch {row['epoch']:>3}/{self.cfg.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}  "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}  lr {row['lr']:.2e}  {row['seconds']:.1f}s"
        )
        if progress is not None:
            progress.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def test_best(self) -> float:
        """Test accuracy of best.pt (the model selected on validation) into a short
        metrics.json: what a run gets when it skips the full evaluation."""
        best = load_checkpoint(self.run.best)
        best_model = create_model(best["model"]["arch"], **best["model"]["kwargs"]).to(self.rt.device)
        best_model.load_state_dict(best["weights"])
        test_loss, test_acc = evaluate_loader(best_model, self.test_loader, self.autocast)
        write_json(self.run.metrics, {
            "checkpoint": "checkpoints/best.pt",
            "epoch": best["epoch"],
            "test": {"top1": test_acc, "loss": test_loss, "images": self.test_loader.num_samples},
            "val": {"top1": best["metrics"].get("val_acc"), "loss": best["metrics"].get("val_loss")},
            # Losses here are of the raw logits, as in the history; the full evaluation's use it.
            "temperature": best.get("temperature", 1.0),
        })
        return test_acc


def train(
    cfg: TrainConfig,
    dataset_spec: str,
    *,
    preset: str = "custom",
    data_dir: str | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    device: str = "auto",
    quiet: bool = False,
    command: str = "",
    resume: str | Path | None = None,
    dataset: Dataset | None = None,
    evaluate: bool = True,
    tta: bool = False,
    on_epoch: Callable[[Trainer, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train from a config (or continue the run folder `resume`) and return the result; with
    `evaluate`, finish with the full evaluation (metrics, figures, report) of best.pt, with
    `tta` including the test-time-augmented splits.
    `dataset` short-circuits loading by spec (tests and benchmarks that hold one in memory)."""
    runtime = start_runtime(device)
    try:
        if resume is not None:
            run = RunFolder(Path(resume))
            if not run.config.is_file():
                raise ConfigError(f"cannot resume: {run.config} does not exist (is {resume} a run folder?)")
            saved = read_json(run.config)
            cfg = TrainConfig.from_dict(saved["config"])
            preset, dataset_spec = saved.get("preset", preset), saved["dataset"]["spec"]
            data_dir = data_dir or saved["dataset"].get("data_dir")
            command = saved.get("command", command)
            run_dir = run.root
        else:
            cfg.validate()
        if dataset is None:
            from cifar100.datasets import load_dataset

            # Rank 0 downloads and extracts; the others wait, then read the verified cache.
            if runtime.is_main:
                dataset = load_dataset(dataset_spec, data_dir, quiet=quiet)
            runtime.barrier()
            if not runtime.is_main:
                dataset = load_dataset(dataset_spec, data_dir, quiet=True)
        if resume is None:
            run_dir = Path(out) if out else Path("runs") / (name or default_run_name(dataset.name, preset))
            if runtime.is_main and (run_dir / "checkpoints" / "last.pt").exists():
                raise ConfigError(
                    f"{run_dir} already holds a run; continue it with --resume {run_dir}, or choose another --out/--name"
                )
        trainer = Trainer(
            cfg, dataset, run_dir, runtime, preset=preset, data_dir=data_dir, quiet=quiet,
            command=command, resume=resume is not None, on_epoch=on_epoch,
        )
        if resume is not None:
            trainer.load_train_state(load_checkpoint(RunFolder(run_dir).last, map_location="cpu"))
            if trainer.start_epoch > cfg.epochs and not quiet and runtime.is_main:
                print(f"{run_dir} already finished all {cfg.epochs} epochs; evaluating best.pt", file=sys.stderr)
        result = trainer.fit()
        if runtime.is_main:
            if evaluate:
                from cifar100.evaluate import evaluate_run

                metrics = evaluate_run(run_dir, tta=tta, data_dir=data_dir, device=runtime.device, quiet=quiet,
                                       dataset=dataset)
                result.test_acc = metrics["test"]["top1"]
                if tta:
                    result.test_tta_acc = metrics["test_tta"]["top1"]
            else:
                result.test_acc = trainer.test_best()
            if not quiet:
                with_tta = f", {result.test_tta_acc:.2%} with TTA" if tta and evaluate else ""
                print(
                    f"best epoch {result.best_epoch}: val acc {result.best_val_acc:.2%}; test acc "
                    f"{result.test_acc:.2%}{with_tta} (checkpoints/best.pt); training took {result.train_seconds:.1f}s. "
                    f"Run folder: {run_dir}",
                    file=sys.stderr,
                )
        return result
    finally:
        if runtime.distributed and dist.is_initialized():
            dist.destroy_process_group()
