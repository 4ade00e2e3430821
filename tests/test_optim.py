"""Muon, checked on its own numbers: orthogonalised filter steps, SGD everywhere else."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cifar100.training.optim import Muon, build_optimizer, orthogonalize
from cifar100.training.presets import get_preset


def test_orthogonalize_evens_out_the_singular_values():
    torch.manual_seed(0)
    # A gradient whose directions differ 30x in size, as real ones do; both orientations.
    for shape in [(96, 32, 3, 3), (32, 96, 3, 3)]:
        spread = torch.linspace(0.1, 3.0, shape[0]).view(-1, 1, 1, 1)
        g = torch.randn(shape) * spread
        before = torch.linalg.svdvals(g.reshape(shape[0], -1))
        out = orthogonalize(g)
        assert out.shape == g.shape
        after = torch.linalg.svdvals(out.reshape(shape[0], -1))
        # Three iterations lift all but the smallest few towards 1 and never overshoot far.
        assert after.max() < 1.25 and 0.7 < after.median() < 1.2, after
        assert (after > 0.5).float().mean() > 0.85 > (before / before.max() > 0.5).float().mean(), after
        # The same directions as the gradient: U V^T has a positive inner product with it.
        assert (out * g).sum() > 0


def test_muon_holds_filter_norms_and_matches_sgd_elsewhere():
    torch.manual_seed(0)
    conv, head = nn.Conv2d(8, 16, 3, bias=False), nn.Linear(16, 4)
    twin_head = nn.Linear(16, 4)
    twin_head.load_state_dict(head.state_dict())
    muon = Muon([{"params": [conv.weight], "orthogonalize": True, "momentum": 0.6, "lr": 0.05},
                 {"params": list(head.parameters()), "weight_decay": 1e-3}], lr=0.1, momentum=0.9)
    sgd = torch.optim.SGD(twin_head.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    for _ in range(5):
        features = conv(torch.randn(32, 8, 5, 5)).amax((2, 3))
        muon.zero_grad()
        sgd.zero_grad()
        head(features).square().mean().backward()
        twin_head(features.detach()).square().mean().backward()
        muon.step()
        sgd.step()
        # Normalised to sqrt(16) = 4 before the step, then moved by lr x an orthogonal-ish step.
        assert abs(conv.weight.norm().item() - 4.0) < 0.05 * math.sqrt(16)
    for a, b in zip(head.parameters(), twin_head.parameters()):
        torch.testing.assert_close(a, b)


def test_muon_groups_filters_apart_from_head_and_biases():
    from cifar100.training.models import create_model

    cfg = get_preset("smoke").with_overrides(optimizer="muon", muon_lr=0.02, lr=0.1, bias_lr_scale=8)
    net = create_model("stagenet", num_classes=4, widths=(8, 8, 8), convs_per_stage=1)
    opt = build_optimizer(net, cfg)
    others, filters, biases = opt.param_groups
    assert filters["orthogonalize"] and all(p.ndim == 4 for p in filters["params"])
    assert filters["lr"] == 0.02 and filters["momentum"] == cfg.muon_momentum and filters["weight_decay"] == 0
    assert others["params"] == [net.head.weight] and others["weight_decay"] == cfg.weight_decay
    # First, so the history's lr column shows --lr's schedule, not the filters' muon_lr.
    assert others["lr"] == 0.1
    assert biases["lr"] == 0.1 * 8 and not biases["orthogonalize"]
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "muon"])
def test_history_lr_column_reports_the_lr_the_user_set(tmp_path, optimizer):
    from cifar100.data.types import Dataset, Split
    from cifar100.training.runtime import start_runtime
    from cifar100.training.trainer import Trainer

    rng = np.random.default_rng(0)
    def split(n):
        return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 4, n).astype(np.int64))
    data = Dataset("random", ["a", "b", "c", "d"], split(64), split(16), spec="random")
    cfg = get_preset("smoke").with_overrides(optimizer=optimizer, lr=0.03, muon_lr=0.2, val_size=16,
                                             schedule="constant", epochs=1, batch_size=16)
    result = Trainer(cfg, data, tmp_path / "run", start_runtime("cpu"), quiet=True).fit()
    assert result.history[0]["lr"] == pytest.approx(0.03)


def test_grad_clip_bounds_every_step(tmp_path):
    """With plain SGD (no momentum, no weight decay, one LR for every group) a step moves the
    weights by lr x the clipped gradient, so an epoch moves them by at most steps x lr x clip;
    without the clip the same epoch moves them far more."""
    from cifar100.data.types import Dataset, Split
    from cifar100.training.runtime import start_runtime
    from cifar100.training.trainer import Trainer

    rng = np.random.default_rng(0)

    def split(n):
        return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 4, n).astype(np.int64))

    data = Dataset("random", ["a", "b", "c", "d"], split(64), split(16), spec="random")

    def moved(tmp, clip: float) -> tuple[float, int]:
        cfg = get_preset("smoke").with_overrides(
            optimizer="sgd", momentum=0.0, nesterov=False, weight_decay=0.0, bias_lr_scale=1.0, lr=0.5,
            schedule="constant", warmup_epochs=0, epochs=1, batch_size=16, val_size=16, grad_clip=clip)
        trainer = Trainer(cfg, data, tmp, start_runtime("cpu"), quiet=True)
        before = [p.detach().clone() for p in trainer.net.parameters()]
        trainer.fit()
        change = torch.cat([(p.detach() - b).flatten() for p, b in zip(trainer.net.parameters(), before)])
        return change.norm().item(), trainer.steps_per_epoch

    clipped, steps = moved(tmp_path / "clipped", clip=1e-3)
    free, _ = moved(tmp_path / "free", clip=0.0)
    assert 0 < clipped <= steps * 0.5 * 1e-3 * (1 + 1e-4)
    assert free > 10 * clipped
