"""Temperature scaling finds the temperature that makes a model's probabilities honest."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cifar100.training.calibration import fit_temperature


def sampled(n: int = 20000, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose softmax is the true class distribution, and labels drawn from it."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, classes, generator=g)
    labels = torch.multinomial(F.softmax(logits, 1), 1, generator=g).squeeze(1)
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_recovers_the_temperature_that_distorted_calibrated_logits(true_temperature):
    logits, labels = sampled()
    fitted = fit_temperature(logits * true_temperature, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)


def test_fitted_temperature_minimises_the_loss_and_keeps_every_prediction():
    logits, labels = sampled(seed=1)
    logits = logits * 1.7
    t = fit_temperature(logits, labels)
    loss = lambda t: F.cross_entropy(logits / t, labels).item()  # noqa: E731
    assert loss(t) <= min(loss(1.0), loss(t * 1.01), loss(t / 1.01))
    assert torch.equal((logits / t).argmax(1), logits.argmax(1))


def test_no_samples_or_broken_logits_leave_the_logits_alone():
    assert fit_temperature(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long)) == 1.0
    logits, labels = sampled(n=100)
    logits[3, 2] = float("nan")
    assert fit_temperature(logits, labels) == 1.0
