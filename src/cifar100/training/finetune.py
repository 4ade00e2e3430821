"""Starting a run from a trained model (`--init-from`): the network is the source's, its
weights are loaded before the first step, and the preset's schedule trains from there.

When the new dataset's classes differ from the source's (by name and order), the head (the
network's last Linear layer) is replaced by a freshly initialised one for the new classes;
every other weight, the fitted patch whitening included, is kept. The inputs are normalised
with the source's mean and std, the statistics its features were learned under."""

from __future__ import annotations

from typing import Any

from torch import nn

from cifar100.errors import ConfigError
from cifar100.model_files import ModelSource, read_model


def read_init_source(init_from: str, quiet: bool = True) -> ModelSource:
    """The trained model `init_from` names: a run folder (its best.pt), checkpoint, weights
    folder, URL, or "pretrained"."""
    return read_model(init_from, "best", quiet=quiet)


def architecture_of(source: ModelSource) -> tuple[str, dict[str, Any]]:
    """The source's model name and settings, without its class count (the dataset's decides)."""
    spec = source.payload["model"]
    return spec["arch"], {k: v for k, v in spec["kwargs"].items() if k != "num_classes"}


def head_of(net: nn.Module) -> str:
    """The name of the network's last Linear layer: the one that maps features to classes."""
    linear = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not linear:
        raise ConfigError(f"{type(net).__name__} has no Linear layer to use as its head")
    return linear[-1]


def load_initial_weights(net: nn.Module, source: ModelSource, classes: list[str]) -> bool:
    """Load the source's weights into `net`; returns True when the head was replaced (the
    classes differ), in which case `net` keeps its own freshly initialised head."""
    weights = dict(source.payload["weights"])
    replace_head = list(source.payload["classes"]) != list(classes)
    if replace_head:
        head = head_of(net) + "."
        weights = {name: value for name, value in weights.items() if not name.startswith(head)}
    missing, unexpected = net.load_state_dict(weights, strict=False)
    expected_missing = {name for name in net.state_dict() if replace_head and name.startswith(head_of(net) + ".")}
    if unexpected or set(missing) != expected_missing:
        raise ConfigError(
            f"the weights of {source.path} do not fit this network: missing {sorted(set(missing) - expected_missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    return replace_head
