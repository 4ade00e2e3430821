"""`--tensorboard`: what TensorBoard reads back from a real run's event files."""

from __future__ import annotations

import csv
import json

import pytest

from run_fixtures import run_cli

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator", reason="the tensorboard extra is not installed"
)


def test_a_run_logs_its_epochs_metrics_and_figures(synthetic_folder, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--preset", "smoke", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache",
                     "--out", out, "--epochs", "3", "--tensorboard")
    assert result.returncode == 0, result.stderr
    assert f"TensorBoard logs in {out / 'tensorboard'}" in result.stderr

    events = event_accumulator.EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    with open(out / "history.csv") as f:
        history = list(csv.DictReader(f))
    for column, tag in (("val_acc", "accuracy/val"), ("train_loss", "loss/train"), ("lr", "learning_rate")):
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [step for step, _ in logged] == [1, 2, 3]
        assert [value for _, value in logged] == pytest.approx([float(row[column]) for row in history], rel=1e-5)
    assert events.Scalars("test/top1")[0].value == pytest.approx(
        json.loads((out / "metrics.json").read_text())["test"]["top1"], rel=1e-5)
    figures = set(events.Tags()["images"])
    assert {"figures/history", "figures/confusion_matrix"} <= figures
    assert len(figures) == len(list((out / "plots").glob("*.png")))
