"""The LR schedule's shape, the plateau's cuts and the Lookahead averaging, checked on their own numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cifar100.training.optim import LearningRate, Lookahead, step_schedule
from cifar100.training.presets import TrainConfig


def test_onecycle_warms_up_from_start_and_decays_to_end():
    f = step_schedule("onecycle", total_steps=100, warmup_steps=20, start=0.2, end=0.07)
    assert f(0) == pytest.approx(0.2 + 0.8 / 20)
    assert f(19) == pytest.approx(1.0)
    assert f(60) == pytest.approx(1 - 0.93 * 40 / 80)
    assert f(100) == pytest.approx(0.07)
    cosine = step_schedule("cosine", total_steps=100, warmup_steps=20, start=0.2, end=0.07)
    assert cosine(0) == f(0) and cosine(19) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.07 + 0.93 * 0.5) and cosine(100) == pytest.approx(0.07)
    plain = step_schedule("onecycle", total_steps=100, warmup_steps=20)
    assert plain(0) == pytest.approx(1 / 20) and plain(100) == 0.0


def test_lookahead_waits_for_its_start_then_averages_more_as_the_run_ends():
    net = nn.Linear(4, 1, bias=False)
    la = Lookahead(net, every=2, start_step=4, total_steps=10, base=0.9)
    w = net.weight

    def train_step(step: int, value: float) -> None:
        with torch.no_grad():
            w.fill_(value)
        la.step(step)

    train_step(2, 1.0)
    assert la.slow is None and torch.all(w == 1.0)  # before the start: untouched
    train_step(4, 2.0)
    assert torch.all(la.slow[0] == 2.0)  # the first due step takes a copy
    train_step(5, 3.0)
    assert torch.all(w == 3.0)  # not due: the fast weights move on alone
    train_step(6, 4.0)
    decay = 0.9**2 * (6 / 10) ** 3
    expected = 2.0 * decay + 4.0 * (1 - decay)
    assert torch.allclose(w, torch.full_like(w, expected))  # the fast weights reset to the slow ones
    train_step(7, 9.0)
    la.sync()
    assert torch.allclose(w, torch.full_like(w, expected))  # end of epoch: the model takes the slow weights

    later = Lookahead(net, every=2, start_step=3, total_steps=10)
    later.resume(steps_done=3)
    assert later.slow is None  # step 3 is past the start but not a multiple of `every`
    later.resume(steps_done=4)
    assert later.slow is not None and torch.equal(later.slow[0], w)


def test_fewer_epochs_stretch_the_schedule_and_still_end_at_full_size():
    from cifar100.cli.main import build_parser
    from cifar100.cli.train import settings_from_args
    from cifar100.training.trainer import configure_run

    def config(*argv):
        args = build_parser("train").parse_args(["train", "--preset", "cpu", *argv])
        return configure_run(args.preset, settings_from_args(args), args.device)[1]

    preset = config()
    short = config("--epochs", "6")
    assert short.epochs == 6
    assert short.warmup_epochs == pytest.approx(preset.warmup_epochs * 6 / preset.epochs)
    assert short.lookahead_start_epochs == pytest.approx(preset.lookahead_start_epochs * 6 / preset.epochs)
    assert 0 < short.progressive_epochs < 6  # some epochs at 24x24, the last ones at full size
    assert config("--epochs", "1").progressive_epochs == 0
    # An explicit setting wins over the stretching, whatever the order on the command line.
    assert config("--set", "warmup_epochs=1", "--epochs", "6").warmup_epochs == 1
    assert config("--epochs", "6", "--set", "progressive_epochs=2").progressive_epochs == 2


def run_epochs(learning_rate: LearningRate, optimizer, val_losses, steps_per_epoch: int, first_epoch: int = 0):
    """The LR each epoch's steps used, with the plateau fed one val loss per epoch."""
    used = []
    for epoch, val_loss in enumerate(val_losses, start=first_epoch):
        step_lrs = set()
        for i in range(steps_per_epoch):
            learning_rate.apply(epoch * steps_per_epoch + i)
            optimizer.step()
            step_lrs.add(optimizer.param_groups[0]["lr"])
        assert len(step_lrs) == 1  # constant within an epoch
        used.append(step_lrs.pop())
        learning_rate.end_epoch(val_loss)
    return used


def test_plateau_cuts_after_patience_epochs_without_improvement_and_the_cut_lasts():
    net = nn.Linear(2, 2)
    optimizer = torch.optim.SGD([{"params": [net.weight], "lr": 1e-3}, {"params": [net.bias], "lr": 4e-3}], lr=1e-3)
    cfg = TrainConfig(schedule="plateau", warmup_epochs=0, plateau_patience=2, plateau_factor=0.5, epochs=8)
    learning_rate = LearningRate(optimizer, cfg, steps_per_epoch=5)
    # Keras's rule: an improvement must beat the best by more than 1e-4; two epochs without
    # one (0.95, 0.91) halve the LR from the next epoch on; 0.80005 is no improvement on 0.8.
    used = run_epochs(learning_rate, optimizer, [1.0, 0.9, 0.95, 0.91, 0.8, 0.80005, 0.9, 0.7], 5)
    assert used == pytest.approx([1e-3] * 4 + [5e-4] * 3 + [2.5e-4])
    assert optimizer.param_groups[1]["lr"] == pytest.approx(4 * optimizer.param_groups[0]["lr"])  # every group alike


def test_the_plateau_state_survives_a_checkpoint():
    def fresh():
        net = nn.Linear(2, 2)
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-2)
        cfg = TrainConfig(schedule="plateau", warmup_epochs=0, plateau_patience=1, plateau_factor=0.1, epochs=6)
        return LearningRate(optimizer, cfg, steps_per_epoch=2), optimizer

    losses = [1.0, 1.1, 0.5, 0.6, 0.7, 0.4]
    whole = run_epochs(*fresh(), losses, 2)
    first, optimizer = fresh()
    head = run_epochs(first, optimizer, losses[:4], 2)
    resumed, optimizer = fresh()
    resumed.load_state_dict(first.state_dict())
    assert head + run_epochs(resumed, optimizer, losses[4:], 2, first_epoch=4) == pytest.approx(whole)
    assert whole == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-5])
