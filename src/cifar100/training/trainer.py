"""The one training loop, for every preset, on CPU, one GPU or many (torchrun), and its two
entry points: `train` (a new run from a config) and `resume` (an interrupted run from its folder).

What it writes (rank 0 only) into the run folder (runs.py): config.json before the first step,
history.csv and checkpoints/last.pt after every epoch, checkpoints/best.pt whenever the
selection score improves. Every write is atomic, so an interruption at any moment loses at most
the epoch in progress, and `resume` continues from last.pt exactly: weights, optimizer, LR
schedule, EMA and history are in the checkpoint, and every epoch's randomness is derived from
(seed, epoch). The evaluation of the result is not training's job: the caller runs it."""

from __future__ import annotations

import dataclasses
import math
import platform
import sys
import time
import contextlib
from contextlib import contextmanager
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
from cifar100.checkpoint import load_checkpoint, save_checkpoint
from cifar100.data.loader import Augment, Batch, DeviceLoader
from cifar100.data.types import Dataset, channel_mean_std, training_splits
from cifar100.devices import choose_precision, describe_device, resolve_device
from cifar100.errors import CheckpointError, ConfigError, TrainingDiverged
from cifar100.runs import RunFolder, default_run_name, selection_score
from cifar100.training.calibration import fit_temperature
from cifar100.training.models import check_model_settings, count_parameters, create_model
from cifar100.training.optim import EMA, LearningRate, Lookahead, build_optimizer
from cifar100.model_files import recorded_source
from cifar100.training.finetune import architecture_of, load_initial_weights, read_init_source
from cifar100.training.presets import TrainConfig, configure, default_preset, get_preset, settings_to_fields
from cifar100.training.runtime import Runtime, compile_or_eager, start_runtime

# ---------------------------------------------------------------------------------------------
# Pieces of the loop


def in_notebook() -> bool:
    """Running in a Jupyter (IPython) kernel."""
    shell = sys.modules.get("IPython")
    ipython = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ipython is not None and "IPKernelApp" in getattr(ipython, "config", {})


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
# Training


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = 0.0  # the selection score of best_epoch (train accuracy without a val split)
    train_seconds: float = 0.0
    test_acc: float = float("nan")  # best.pt's, once measured
    # Where the run happened and on what, for an evaluation in the same process.
    is_main: bool = True
    device: torch.device | None = None
    dataset: Dataset | None = None
    data_dir: str | None = None


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
        resume: dict[str, Any] | None = None,
        on_epoch: Callable[["Trainer", dict[str, float]], None] | None = None,
    ):
        # resume: the last.pt payload a resumed run continues from (load_train_state applies it).
        self.on_epoch = on_epoch  # called on rank 0 after each epoch's files are written
        self.cfg, self.dataset, self.rt, self.quiet = cfg.validate(), dataset, runtime, quiet
        self.run = RunFolder(Path(run_dir))
        self.preset, self.command = preset, command
        device = runtime.device
        self.precision = choose_precision(device, cfg.precision)
        dtype = self.precision.autocast_dtype
        # fp32: no autocast context at all (older torch refuses one for some device types).
        self.autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.needs_grad_scaler)

        train, val = training_splits(dataset, cfg.val_size, cfg.split_seed)
        if len(train) < cfg.batch_size * runtime.world_size and len(train) > 0:
            # A batch larger than the data would make every epoch a single partial step.
            cfg = self.cfg = cfg.with_overrides(batch_size=max(1, len(train) // runtime.world_size))
        # The normalisation: a resumed run's own (in its checkpoint, whatever became of the model
        # it started from); a fine-tuned run's source's, the statistics its features were
        # learned under; else this training split's.
        init_source = read_init_source(cfg.init_from, quiet=quiet) if cfg.init_from and resume is None else None
        if resume is not None:
            self.mean, self.std = list(resume["normalization"]["mean"]), list(resume["normalization"]["std"])
        elif init_source is not None:
            norm = init_source.payload["normalization"]
            self.mean, self.std = list(norm["mean"]), list(norm["std"])
        else:
            self.mean, self.std = channel_mean_std(train.images)
        # What evaluation, export and resume reload the dataset with (sources.load_recorded_dataset),
        # so they see this run's test split; val_from: "folder" (its val/, val_size unused) or "train".
        self.dataset_info = {
            "spec": dataset.spec, "name": dataset.name, "data_dir": data_dir, **_split_options(cfg),
            "val_size": cfg.val_size, "val_from": dataset.val_from, "num_classes": dataset.num_classes,
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
        self.init = None  # what --init-from loaded, for config.json
        if init_source is not None:
            replaced = load_initial_weights(net, init_source, dataset.classes)
            self.init = {"source": cfg.init_from, "weights": str(init_source.path),
                         "source_classes": len(init_source.payload["classes"]), "head_replaced": replaced}
            if not quiet and runtime.is_main:
                head = (f"its head replaced for this dataset's {dataset.num_classes} classes" if replaced
                        else "all of it, head included (same classes)")
                print(f"starting from {cfg.init_from} ({len(init_source.payload['classes'])} classes): {head}",
                      file=sys.stderr, flush=True)
        if getattr(net, "whiten", None) is not None and resume is None and not cfg.init_from:
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
        self.compiled = False
        if cfg.compile and device.type == "cuda":
            # The trial batch has the training batch's shape, so training does not recompile
            # for a new size (which would make dynamo switch to slower dynamic shapes).
            loader = self.val_loader if self.val_loader.num_samples else self.test_loader
            model, self.compiled = compile_or_eager(model, next(loader.epoch()).inputs[:per_rank_batch])
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
                "grad_scaler": self.scaler.state_dict(),
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
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
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
        self.run.write_config({
            "name": self.run.root.name,
            "preset": self.preset,
            "config": self.cfg.to_dict(),
            "dataset": self.dataset_info,
            "seed": self.cfg.seed,
            "device": describe_device(self.rt.device),
            "precision": self.precision.name,
            "compiled": self.compiled,
            "world_size": self.rt.world_size,
            "model": {**self.model_spec, "parameters": count_parameters(self.net)},
            "versions": {
                "cifar100": __version__, "torch": torch.__version__, "numpy": np.__version__,
                "python": platform.python_version(),
            },
            "command": self.command,
            "commit": source_commit(),
            "init_from": self.init,
            "started": datetime.now().isoformat(timespec="seconds"),
        })

    def fit(self) -> TrainResult:
        if self.rt.is_main:
            self.run.prepare(checkpoint_bytes=12 * count_parameters(self.net))
            if self.start_epoch == 1:
                self.write_config()
            if not self.quiet:
                info = self.dataset_info
                print(f"{self.preset} on {info['name']} ({info['train_images']:,} train, {info['val_images']:,} val "
                      f"images), {describe_device(self.rt.device)}, {self.precision.describe()}"
                      f"{', compiled' if self.compiled else ''}; run folder {self.run.root}", file=sys.stderr, flush=True)
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
        score = selection_score(row)
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
            self.scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not fp16's scaled ones
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
            self.learning_rate.apply(step)
            self.scaler.step(self.optimizer)
            self.scaler.update()
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
        """A progress bar where someone watches: a terminal, or a notebook (a widget there).
        Written to a file or a pipe (a log), the run prints its per-epoch lines alone."""
        if self.quiet or not self.rt.is_main or not (in_notebook() or sys.stderr.isatty()):
            return None
        from tqdm.auto import tqdm

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
            print(line, file=sys.stderr, flush=True)

    def test_best(self) -> float:
        """Test accuracy of best.pt (the model selected on validation) into a short
        metrics.json: what a run gets when it skips the full evaluation."""
        best = load_checkpoint(self.run.best)
        best_model = create_model(best["model"]["arch"], **best["model"]["kwargs"]).to(self.rt.device)
        best_model.load_state_dict(best["weights"])
        test_loss, test_acc = evaluate_loader(best_model, self.test_loader, self.autocast)
        self.run.write_metrics({
            "checkpoint": self.run.best.relative_to(self.run.root).as_posix(),
            "epoch": best["epoch"],
            "test": {"top1": test_acc, "loss": test_loss, "images": self.test_loader.num_samples},
            "val": {"top1": best["metrics"].get("val_acc"), "loss": best["metrics"].get("val_loss")},
            # Losses here are of the raw logits, as in the history; the full evaluation's use it.
            "temperature": best.get("temperature", 1.0),
        })
        return test_acc


def source_commit() -> str | None:
    """The git commit of the code doing the training, when it runs from a checkout of this
    project (an editable install): part of a run's provenance, and of the weights exported from
    it. An installed package inside some other repository (a venv in a user's project) has none."""
    import subprocess

    package = Path(__file__).resolve().parents[1]  # src/cifar100

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() / "src" / "cifar100" != package:
        return None
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", str(package))
    return commit + ("-dirty" if dirty else "")


def configure_run(preset: str | None, settings: dict[str, Any], device: str = "auto") -> tuple[str, TrainConfig]:
    """The preset (default: fast on a GPU, cpu otherwise) with the user's settings applied
    (by the names in SETTING_NAMES, or any field's own), validated, and its model built once:
    every mistake is a ConfigError before any data is loaded. The command line and the Python
    API both start here."""
    if preset is None:
        preset = default_preset(gpu=resolve_device(device).type == "cuda")
    cfg = configure(get_preset(preset), settings)
    if cfg.init_from:
        # The weights decide the network: a preset's own model settings give way to them.
        chosen = {"model", "model_kwargs"} & set(settings_to_fields(settings))
        if chosen:
            raise ConfigError(f"--init-from brings its own network; drop the {' and '.join(sorted(chosen))} setting")
        arch, kwargs = architecture_of(read_init_source(cfg.init_from))
        cfg = dataclasses.replace(cfg, model=arch, model_kwargs=kwargs, init_from=recorded_source(cfg.init_from))
    check_model_settings(cfg.model, cfg.model_kwargs)
    return preset, cfg


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
    dataset: Dataset | None = None,
    test_best: bool = True,
    on_epoch: Callable[[Trainer, dict[str, float]], None] | None = None,
) -> TrainResult:
    """A new run of `cfg` on the dataset `dataset_spec`, in `out` (default runs/<name>).
    `test_best`: finish with best.pt's test accuracy in a short metrics.json (a caller that
    runs the full evaluation next skips it). `dataset`: the loaded dataset, when the caller
    holds it already (tests and benchmarks)."""
    cfg.validate()
    with _runtime(device) as runtime:
        dataset = dataset or _load({"spec": dataset_spec, **_split_options(cfg)}, data_dir, quiet, runtime)
        run = RunFolder(Path(out) if out else Path("runs") / (name or default_run_name(dataset.name, preset)))
        if runtime.is_main and run.has_run:
            raise ConfigError(
                f"{run.root} already holds a run; continue it with --resume {run.root}, or choose another --out/--name"
            )
        trainer = Trainer(cfg, dataset, run.root, runtime, preset=preset, data_dir=data_dir, quiet=quiet,
                          command=command, on_epoch=on_epoch)
        return _finish(trainer, dataset, data_dir, test_best)


def resume(
    run_dir: str | Path,
    *,
    data_dir: str | None = None,
    device: str = "auto",
    quiet: bool = False,
    dataset: Dataset | None = None,
    test_best: bool = True,
    on_epoch: Callable[[Trainer, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Continue the run in `run_dir` from its last.pt with the settings its config.json holds
    (edit that file to change them, e.g. more epochs), to the same result as an uninterrupted run."""
    run = RunFolder(Path(run_dir))
    saved = run.read_config()
    if saved is None:
        raise ConfigError(f"cannot resume: {run.config_path} does not exist (is {run_dir} a run folder?)")
    cfg = TrainConfig.from_dict(saved["config"])
    data_dir = data_dir or run.data_dir()
    with _runtime(device) as runtime:
        dataset = dataset or _load(saved["dataset"], data_dir, quiet, runtime)
        last = load_checkpoint(run.last, map_location="cpu")
        trainer = Trainer(cfg, dataset, run.root, runtime, preset=saved.get("preset", "custom"), data_dir=data_dir,
                          quiet=quiet, command=saved.get("command", ""), resume=last, on_epoch=on_epoch)
        trainer.load_train_state(last)
        if trainer.start_epoch > cfg.epochs and not quiet and runtime.is_main:
            print(f"{run.root} already finished all {cfg.epochs} epochs", file=sys.stderr)
        return _finish(trainer, dataset, data_dir, test_best)


@contextmanager
def _runtime(device: str):
    runtime = start_runtime(device)
    try:
        yield runtime
    finally:
        if runtime.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _split_options(cfg: TrainConfig) -> dict[str, Any]:
    """The settings, besides its spec, that a dataset is loaded and split with, by the names a
    run's dataset info records them under."""
    return {"test_size": cfg.test_size, "split_seed": cfg.split_seed, "center_crop": cfg.center_crop}


def _load(recorded: dict[str, Any], data_dir: str | None, quiet: bool, runtime: Runtime) -> Dataset:
    """The dataset `recorded` names (a spec and _split_options, as a run's dataset info holds
    them). Rank 0 downloads and extracts; the others wait, then read the verified cache."""
    from cifar100.data.sources import load_recorded_dataset

    dataset = load_recorded_dataset(recorded, data_dir, quiet=quiet) if runtime.is_main else None
    runtime.barrier()
    return dataset if runtime.is_main else load_recorded_dataset(recorded, data_dir, quiet=True)


def _finish(trainer: Trainer, dataset: Dataset, data_dir: str | None, test_best: bool) -> TrainResult:
    result = trainer.fit()
    result.is_main, result.device, result.dataset, result.data_dir = (
        trainer.rt.is_main, trainer.rt.device, dataset, data_dir)
    if test_best and trainer.rt.is_main:
        result.test_acc = trainer.test_best()
    return result
