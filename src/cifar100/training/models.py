"""The network family, behind a registry: `create_model(name, **kwargs)`.

`stagenet` is our own architecture: a frozen patch-whitening stem, then stages of
conv -> max-pool -> BatchNorm -> GELU -> conv -> BatchNorm -> GELU, global max pooling and a
bias-free linear head. It follows what the public CIFAR speedruns found works (airbench,
hlb-CIFAR10) but is sized by `widths` and `convs_per_stage` so one family spans a 2-core CPU
and an H100. `keras_seed` is a faithful replica of the classic Keras CIFAR-100 notebook model,
kept as the baseline every preset is compared against.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from cifar100.errors import ConfigError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = fn
        return fn

    return add


def create_model(name: str, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a frozen scale: the scale is redundant before a conv that follows and
    freezing it lets a high learning rate on the shift train stably (airbench's finding)."""

    def __init__(self, channels: int, momentum: float = 0.6, eps: float = 1e-12):
        super().__init__(channels, momentum=momentum, eps=eps)
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    """3x3 same-padding conv without bias (BatchNorm follows), identity-like initialised:
    the first in_channels filters start as the identity so a deep stack starts near a
    shallow one and trains from the first step."""

    def __init__(self, cin: int, cout: int, identity_init: bool = True):
        self.identity_init = identity_init
        super().__init__(cin, cout, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.identity_init:
            w = self.weight.data
            torch.nn.init.dirac_(w[: min(w.size(0), w.size(1))])


class Stage(nn.Module):
    """conv -> 2x2 max-pool -> BN -> GELU, then (convs - 1) x [conv -> BN -> GELU].
    Pooling right after the first conv halves the cost of everything after it."""

    def __init__(self, cin: int, cout: int, convs: int, bn_momentum: float, identity_init: bool = True):
        super().__init__()
        layers: list[nn.Module] = [
            Conv(cin, cout, identity_init), nn.MaxPool2d(2), BatchNorm(cout, bn_momentum), nn.GELU()
        ]
        for _ in range(convs - 1):
            layers += [Conv(cout, cout, identity_init), BatchNorm(cout, bn_momentum), nn.GELU()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class PatchWhitening(nn.Conv2d):
    """A frozen 2x2 conv whose filters are the eigenvectors of the training images' 2x2 patch
    covariance, scaled to unit variance, in +/- pairs: the first layer starts out decorrelating
    its input, which the speedruns found worth several epochs. Fitted once by `fit` on the
    training images before the first step; stored in the state dict like any weight."""

    def __init__(self, cin: int = 3, patch: int = 2, eps: float = 5e-4, padding: str = "valid"):
        # "valid" shrinks the image by patch - 1 pixels (32 -> 31, and the stages then run at
        # 31/15/7/3); "same" pads right and bottom to keep 32/16/8/4.
        if padding not in ("valid", "same"):
            raise ConfigError(f"whitening padding must be 'valid' or 'same', got {padding!r}")
        n = cin * patch * patch
        super().__init__(cin, 2 * n, kernel_size=patch, padding=0, bias=True)
        self.pad_same = padding == "same"
        self.eps = eps
        self.weight.requires_grad = False
        self.bias.requires_grad = False

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """images: normalised float (N, C, H, W); a few thousand are plenty."""
        c, k = self.in_channels, self.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        patches = patches.transpose(1, 3).reshape(-1, c * k * k)
        patches = patches - patches.mean(0, keepdim=True)
        cov = patches.T @ patches / len(patches)
        eigval, eigvec = torch.linalg.eigh(cov.double())
        filters = (eigvec.T / torch.sqrt(eigval.clamp_min(0) + self.eps)[:, None]).float()
        filters = filters.reshape(-1, c, k, k)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))
        self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_same:  # explicit zero padding: Conv2d's padding="same" warns for even kernels
            k = self.kernel_size[0] - 1
            x = nn.functional.pad(x, (0, k, 0, k))
        return super().forward(x)


class StageNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 100,
        widths: tuple[int, ...] = (64, 256, 256),
        convs_per_stage: int | tuple[int, ...] = 2,
        bn_momentum: float = 0.6,
        dropout: float = 0.0,
        logit_scale: float = 1 / 9,
        whiten: bool = True,
        whiten_padding: str = "valid",
        identity_init: bool = True,
    ):
        super().__init__()
        # whiten=False and identity_init=False exist to measure what those tricks buy.
        self.whiten = PatchWhitening(padding=whiten_padding) if whiten else None
        # One count for every stage, or one per stage: extra convs in the late stages cost
        # little, as they run at 8x8 and 4x4 on 32x32 images.
        counts = (convs_per_stage,) * len(widths) if isinstance(convs_per_stage, int) else tuple(convs_per_stage)
        if len(counts) != len(widths) or min(counts) < 1:
            raise ConfigError(f"convs_per_stage must be >= 1, one count or one per stage ({len(widths)}), got {convs_per_stage}")
        stages, cin = [], self.whiten.out_channels if whiten else 3
        for width, convs in zip(widths, counts):
            stages.append(Stage(cin, width, convs, bn_momentum, identity_init))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveMaxPool2d(1)  # global pooling in place of Flatten: size-agnostic
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(cin, num_classes, bias=False)
        # A small constant on the logits keeps early softmax outputs soft, so a high LR is stable.
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.whiten is not None:
            x = nn.functional.gelu(self.whiten(x))
        x = self.pool(self.stages(x)).flatten(1)
        return self.head(self.dropout(x)) * self.logit_scale


@register("stagenet")
def stagenet(**kwargs) -> nn.Module:
    kwargs["widths"] = tuple(kwargs.get("widths", (64, 256, 256)))
    return StageNet(**kwargs)


class KerasSeed(nn.Module):
    """The classic Keras CIFAR-100 notebook model, layer for layer: blocks of
    [Conv2D(same) -> BatchNormalization -> LeakyReLU] x 2 -> MaxPool2D -> Dropout,
    GlobalAveragePooling2D, Dense -> BatchNormalization -> LeakyReLU -> Dropout, Dense(100)
    (softmax is in the loss). Keras defaults are kept: conv/dense biases, Glorot-uniform
    weights, BatchNorm momentum 0.99 (PyTorch 0.01) and eps 1e-3."""

    def __init__(
        self,
        num_classes: int = 100,
        widths: tuple[int, ...] = (64, 128, 256),
        dense: int = 512,
        conv_dropout: float = 0.25,
        dense_dropout: float = 0.5,
        negative_slope: float = 0.1,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for width in widths:
            for _ in range(2):
                layers += [
                    nn.Conv2d(cin, width, 3, padding=1),
                    nn.BatchNorm2d(width, momentum=0.01, eps=1e-3),
                    nn.LeakyReLU(negative_slope),
                ]
                cin = width
            layers += [nn.MaxPool2d(2), nn.Dropout(conv_dropout)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(cin, dense),
            nn.BatchNorm1d(dense, momentum=0.01, eps=1e-3),
            nn.LeakyReLU(negative_slope),
            nn.Dropout(dense_dropout),
            nn.Linear(dense, num_classes),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register("keras_seed")
def keras_seed(**kwargs) -> nn.Module:
    if "widths" in kwargs:
        kwargs["widths"] = tuple(kwargs["widths"])
    return KerasSeed(**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def forward_flops(model: nn.Module, image_size: int = 32) -> int:
    """Multiply-adds x 2 of the conv and linear layers for one image, counted with hooks
    on a real forward pass (so pooling and strides are accounted for exactly)."""
    total = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal total
        total += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal total
        total += 2 * out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros(1, 3, image_size, image_size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


def check_model_settings(model: str, model_kwargs: dict) -> None:
    """Build the model and pass two images through it, so that model settings which make no
    working network (a misspelled or negative width, an unknown argument) fail here, before the
    dataset is loaded, with a message instead of a traceback from deep inside PyTorch. On the
    CPU: 0.1 s for the cpu preset's model, 0.6 s for the largest (PyTorch's meta device would
    cost a fixed ~1.4 s of imports on first use)."""
    import warnings

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "initializing zero-element tensors" and the like
            net = create_model(model, **{**model_kwargs, "num_classes": 10})
            net.eval()(torch.zeros(2, 3, 32, 32))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the model's code raises, these settings do not build it
        raise ConfigError(
            f"the model settings make no working {model}: model_kwargs={model_kwargs} "
            f"fails with {type(exc).__name__}: {exc}"
        ) from None
