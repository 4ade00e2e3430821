"""Training presets are data: one `TrainConfig` each. Any field can be overridden from the
command line (`--epochs 5`, `--set label_smoothing=0.1`); the loop never branches on a
preset's name."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from cifar100.data.types import (
    DEFAULT_CENTER_CROP,
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_SIZE,
    DEFAULT_VAL_SIZE,
    check_size,
)
from cifar100.devices import PRECISION_CHOICES
from cifar100.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw", "muon")
SCHEDULES = ("onecycle", "linear", "cosine", "plateau", "constant")
FLIPS = ("none", "random", "alternating")

# The settings users know by torchvision's reference-script flags (`--model-ema`), each with the
# TrainConfig field it sets. The command line takes them as flags and the Python API as keyword
# arguments (model_ema=0.999); any other field is set by its own name (--set cutout=8, cutout=8).
SETTING_NAMES = {
    "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "seed": "seed", "optimizer": "optimizer",
    "schedule": "schedule", "weight_decay": "weight_decay", "label_smoothing": "label_smoothing",
    "mixup_alpha": "mixup_alpha", "cutmix_alpha": "cutmix_alpha", "model_ema": "ema_decay",
    "grad_clip": "grad_clip", "val_size": "val_size", "test_size": "test_size", "precision": "precision",
    "compile": "compile", "init_from": "init_from",
}


@dataclass
class TrainConfig:
    description: str = ""
    # Model: a registry name and its keyword arguments (num_classes comes from the dataset).
    model: str = "stagenet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 512
    # Optimizer. lr is the peak learning rate; weight decay skips BatchNorm and biases.
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # LR multiplier for BatchNorm shifts and biases: with BatchNorm scales frozen, the shifts
    # can take a much higher LR (airbench's 64x) and the net fits faster.
    bias_lr_scale: float = 1.0
    # optimizer="muon" (optim.Muon): conv filters take orthogonalised steps of muon_lr (a
    # fraction of their norm, which is held fixed) with their own momentum; biases and the head
    # stay SGD with lr, momentum and weight_decay above.
    muon_lr: float = 0.05
    muon_momentum: float = 0.6
    # Schedule: onecycle = linear warm-up over warmup_epochs then linear decay to 0;
    # linear/cosine decay from the peak; plateau = Keras ReduceLROnPlateau on val loss.
    schedule: str = "onecycle"
    warmup_epochs: float = 1.0
    # As fractions of the peak LR: where the warm-up (onecycle, cosine) starts and where the
    # decay (onecycle, linear, cosine) ends.
    lr_start: float = 0.0
    lr_end: float = 0.0
    # plateau: an epoch improves when its val loss beats the best by more than min_delta (Keras's).
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    plateau_min_delta: float = 1e-4
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0 = off; else per-step decay of an exponential moving average of weights
    grad_clip: float = 0.0  # 0 = off; else max global gradient norm
    # Lookahead (optim.Lookahead): every lookahead_every steps (0 = off) from
    # lookahead_start_epochs on, slow weights average the fast ones, more strongly as the run ends.
    lookahead_every: int = 0
    lookahead_start_epochs: float = 3.0
    # Augmentation, done on the device on whole batches.
    translate: int = 2  # random shift of up to this many pixels (reflect padding + crop)
    flip: str = "alternating"
    cutout: int = 0  # side of a square zeroed at a random place; 0 = off
    # Progressive resizing: the first progressive_epochs train on random progressive_size
    # crops, at (size/32)^2 of the cost; the rest at full size. 0 = off.
    progressive_size: int = 0
    progressive_epochs: int = 0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # Data and run. A split size is a fraction below 1 (0.1) or a whole count (5000); 0.1 of
    # CIFAR-100's 50,000 training images is the same 5,000-image split as the count 5000.
    val_size: float = DEFAULT_VAL_SIZE  # carved off the training images, unless the dataset has a val/ folder
    test_size: float = DEFAULT_TEST_SIZE  # carved off a <class>/<image> folder, which has no test/ of its own
    # An image folder's photos that are not 32x32: centre-cropped to a square, then downscaled
    # (as `predict` does); False squashes the whole photo (as `predict --no-crop`).
    center_crop: bool = DEFAULT_CENTER_CROP
    split_seed: int = DEFAULT_SPLIT_SEED  # the carved splits' seed, fixed so seeds compare on the same split
    seed: int = 0
    # Start from a trained model (training/finetune.py): a run folder, checkpoint, weights folder,
    # URL, or "pretrained"; its network replaces `model`/`model_kwargs`. "" = from scratch.
    init_from: str = ""
    compile: bool = False  # torch.compile the model (CUDA only; the first epoch pays for it)
    channels_last: bool = True  # NHWC activations: much faster on CPUs (oneDNN) and on GPUs
    precision: str = "auto"  # auto | 32 | bf16 | 16: see devices.choose_precision

    def validate(self) -> "TrainConfig":
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        need(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}")
        need(0 < self.lr < float("inf"), f"learning rate must be a positive number, got {self.lr}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(self.flip in FLIPS, f"flip must be one of {FLIPS}, got {self.flip!r}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(0 < self.muon_lr < float("inf"), f"muon_lr must be a positive number, got {self.muon_lr}")
        need(0 <= self.muon_momentum < 1, f"muon_momentum must be in [0, 1), got {self.muon_momentum}")
        need(self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}")
        need(self.bias_lr_scale > 0, f"bias LR scale must be positive, got {self.bias_lr_scale}")
        need(0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        need(0 <= self.ema_decay < 1, f"EMA decay must be in [0, 1), got {self.ema_decay}")
        need(0 <= self.lr_start <= 1 and 0 <= self.lr_end <= 1,
             f"lr_start and lr_end are fractions of the peak LR in [0, 1], got {self.lr_start}, {self.lr_end}")
        need(self.lookahead_every >= 0 and self.lookahead_start_epochs >= 0,
             f"lookahead_every and lookahead_start_epochs must be >= 0, got {self.lookahead_every}, {self.lookahead_start_epochs}")
        need(self.grad_clip >= 0, f"gradient clipping must be >= 0, got {self.grad_clip}")
        need(0 <= self.translate <= 16, f"translate must be 0..16 pixels, got {self.translate}")
        need(0 <= self.cutout <= 32, f"cutout must be 0..32 pixels, got {self.cutout}")
        need(self.mixup_alpha >= 0 and self.cutmix_alpha >= 0, "mixup/cutmix alpha must be >= 0")
        need(self.progressive_size == 0 or 8 <= self.progressive_size <= 32,
             f"progressive size must be 0 (off) or 8..32 pixels, got {self.progressive_size}")
        need(self.progressive_epochs >= 0, f"progressive epochs must be >= 0, got {self.progressive_epochs}")
        check_size(self.val_size, "validation size")
        check_size(self.test_size, "test size", allow_zero=False)
        # numpy's generators (the validation split) take no negative seed.
        need(self.seed >= 0 and self.split_seed >= 0, f"seeds must be >= 0, got seed={self.seed}, split_seed={self.split_seed}")
        need(isinstance(self.model_kwargs, dict),
             f"model_kwargs must be a JSON object such as '{{\"widths\": [32, 64, 128]}}', got {self.model_kwargs!r}")
        need(self.warmup_epochs >= 0, f"warm-up epochs must be >= 0, got {self.warmup_epochs}")
        need(self.precision in PRECISION_CHOICES,
             f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        need(self.plateau_patience >= 0 and 0 < self.plateau_factor < 1 and self.plateau_min_delta >= 0,
             "plateau patience >= 0, 0 < factor < 1 and min_delta >= 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def with_epochs(self, epochs: int) -> "TrainConfig":
        """A copy that runs `epochs` epochs with its schedule stretched to fit: warm-up,
        Lookahead's start and the progressive-resizing phase keep their share of the run (so
        `--epochs 5` on the cpu preset still ends at full size instead of spending all five
        epochs on 24x24 crops). Fields set explicitly afterwards override this."""
        if epochs < 1 or epochs == self.epochs:
            return dataclasses.replace(self, epochs=epochs)  # validate() names a bad count
        share = epochs / self.epochs
        progressive = self.progressive_epochs
        if progressive:
            full_size_epochs = max(1, round((self.epochs - progressive) * share))
            progressive = max(0, min(round(progressive * share), epochs - full_size_epochs))
        return dataclasses.replace(
            self, epochs=epochs, warmup_epochs=self.warmup_epochs * share,
            lookahead_start_epochs=self.lookahead_start_epochs * share, progressive_epochs=progressive,
        )

    def with_overrides(self, **overrides: Any) -> "TrainConfig":
        """A copy with fields replaced; unknown names and wrong types are ConfigErrors."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        values = {}
        for name, value in overrides.items():
            if name not in fields:
                raise ConfigError(f"unknown setting {name!r}; settings: {', '.join(fields)}")
            # The default's type, not the current value's: a preset's count (val_size=100) must
            # not turn the field into an int that refuses a fraction.
            values[name] = _coerce(name, value, type(getattr(_DEFAULTS, name)))
        return dataclasses.replace(self, **values)


_DEFAULTS = TrainConfig()


def _coerce(name: str, value: Any, kind: type) -> Any:
    if kind is int and isinstance(value, float) and not isinstance(value, bool):
        if not value.is_integer():
            raise ConfigError(f"setting {name}={value!r} is not a valid int")
        return int(value)
    if not isinstance(value, str) or kind is str:
        return value
    try:
        if kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is dict:
            return json.loads(value)
        return kind(value)
    except ValueError:
        raise ConfigError(f"setting {name}={value!r} is not a valid {kind.__name__}") from None


# The presets. Each trick carries a one-line note of why it is there; the measurements behind
# them are in docs/results.md.
PRESETS: dict[str, TrainConfig] = {
    "smoke": TrainConfig(
        description="seconds on a CPU; for tests: a tiny model, 2 epochs",
        model_kwargs={"widths": [16, 32, 32], "convs_per_stage": 1},
        epochs=2, batch_size=64, lr=0.05, weight_decay=5e-4, warmup_epochs=0.5,
        label_smoothing=0.1, val_size=100, translate=2, flip="alternating",
    ),
    "cpu-small": TrainConfig(
        description="a smaller, shorter cpu preset (the CIFAR-10 recipe): for when time is short",
        # Wider late stages are cheap (after their pools they run at 8x8 and 4x4) and the small net
        # underfits, so they get a third conv. No patch whitening: it wins at equal epochs but
        # loses at equal time.
        model_kwargs={"widths": [32, 96, 192], "convs_per_stage": [2, 3, 3], "whiten": False},
        # airbench's per-example LR, weight decay and 64x BatchNorm-shift LR, rescaled to batch 256;
        # its schedule (0.2 -> 1 over the first sixth, then down to 0.07) and Lookahead.
        epochs=17, batch_size=256, lr=0.5, momentum=0.85, weight_decay=1e-3, bias_lr_scale=64,
        warmup_epochs=3, lr_start=0.2, lr_end=0.07, lookahead_every=5, lookahead_start_epochs=3,
        # Muon for the conv filters: lower train and validation loss than SGD at the same epochs;
        # the head and shifts stay on SGD above.
        optimizer="muon", muon_lr=0.05, muon_momentum=0.8,
        # Label smoothing 0.1: chosen on CIFAR-10, where it calibrates better than 0.2.
        label_smoothing=0.1, translate=2, flip="alternating",
        # The first 8 epochs see random 24x24 crops at about half the cost of a full epoch: the
        # time saved buys more epochs at full size.
        progressive_size=24, progressive_epochs=8,
    ),
    "fast": TrainConfig(
        description="seconds on one GPU: the airbench-style recipe, widened for 100 classes",
        model_kwargs={"widths": [128, 384, 384], "convs_per_stage": 2},
        epochs=12, batch_size=1024, lr=0.4, momentum=0.85, weight_decay=5e-4, warmup_epochs=2,
        label_smoothing=0.2, translate=2, flip="alternating", compile=True,
    ),
    "standard": TrainConfig(
        description="about a minute on one GPU: wider, deeper, longer, with EMA and cutout",
        model_kwargs={"widths": [128, 512, 512], "convs_per_stage": 3},
        epochs=40, batch_size=512, lr=0.2, momentum=0.9, weight_decay=5e-4, warmup_epochs=4,
        label_smoothing=0.2, ema_decay=0.999, translate=4, cutout=12, flip="alternating", compile=True,
    ),
    "best": TrainConfig(
        description="the longest and strongest: several minutes on one GPU",
        model_kwargs={"widths": [192, 768, 768], "convs_per_stage": 3},
        epochs=100, batch_size=512, lr=0.2, momentum=0.9, weight_decay=5e-4, warmup_epochs=5,
        schedule="onecycle", label_smoothing=0.2, ema_decay=0.9995, translate=4, cutout=12,
        mixup_alpha=0.2, flip="alternating", compile=True,
    ),
    "keras-seed": TrainConfig(
        description="replica of the classic Keras CIFAR-100 notebook: the baseline to beat",
        model="keras_seed",
        model_kwargs={"widths": [64, 128, 256], "dense": 512},
        epochs=50, batch_size=64, optimizer="adam", lr=1e-3, momentum=0.9, nesterov=False,
        weight_decay=0.0, schedule="plateau", warmup_epochs=0, plateau_patience=3, plateau_factor=0.5,
        label_smoothing=0.0, translate=3, flip="random",
    ),
}


# The default on a CPU: cpu-small's recipe sized up for CIFAR-100's 100 classes of 450 images.
# Wider stages 2 and 3 (a 256-wide last stage feeds a 100-way head) and 24 epochs, the first 8 on
# 24x24 crops; the schedule is cpu-small's stretched to fit (warm-up and Lookahead's start keep
# their share); label smoothing 0.2, as the CIFAR-100 speedruns use.
PRESETS["cpu"] = dataclasses.replace(
    PRESETS["cpu-small"].with_epochs(24),
    description="the default on a CPU, sized for CIFAR-100's 100 classes",
    model_kwargs={"widths": [32, 128, 256], "convs_per_stage": [2, 3, 3], "whiten": False},
    progressive_epochs=8, label_smoothing=0.2,
)
PRESETS = {name: PRESETS[name] for name in ("smoke", "cpu", "cpu-small", "fast", "standard", "best", "keras-seed")}


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])


def parse_settings(items: list[str]) -> dict[str, str]:
    """`FIELD=VALUE` strings (`--set` on the command line and in the benchmarks) -> {field: value};
    dashes in names are accepted for underscores, values are coerced by `with_overrides`."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set takes FIELD=VALUE, got {item!r}")
        settings[key.strip().replace("-", "_")] = value
    return settings


def default_preset(gpu: bool) -> str:
    """What `cifar100 train` uses without --preset: fast on a GPU, cpu otherwise."""
    return "fast" if gpu else "cpu"


def settings_to_fields(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings by the names users give them (SETTING_NAMES, else the field's own) -> fields."""
    return {SETTING_NAMES.get(name, name): value for name, value in settings.items()}


def configure(base: TrainConfig, settings: dict[str, Any]) -> TrainConfig:
    """`base` with `settings` (by the names in SETTING_NAMES, or any field's own) applied and
    validated. A new epoch count goes first, through `with_epochs`, so the schedule stretches
    to fit and explicit warm-up (etc.) settings still win."""
    settings = settings_to_fields(settings)
    if "epochs" in settings:
        base = base.with_epochs(base.with_overrides(epochs=settings["epochs"]).epochs)
    return base.with_overrides(**settings).validate()
