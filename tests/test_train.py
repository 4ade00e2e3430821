"""`cifar100 train`: it learns, its run folder holds what it promises, an interrupted run
resumes to the same history, torchrun runs it on two processes, and a diverging run stops
with a clear message and keeps its last good checkpoint."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifar100.checkpoint import load_checkpoint
from run_fixtures import run_cli


def history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def without_time(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_train_learns_and_writes_run_folder(tmp_path, synthetic_folder):
    run_dir = tmp_path / "run"
    result = run_cli("train", "--preset", "smoke", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache",
                     "--out", run_dir, "--epochs", "3", "--quiet", "--tta")
    assert result.returncode == 0, result.stderr

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["checkpoint"] == "checkpoints/best.pt"
    assert metrics["test"]["top1"] > 0.8  # chance is 0.25
    # --tta: the final evaluation also holds the test-time-augmented splits, as `evaluate --tta`.
    assert metrics["test_tta"]["tta"] is True and metrics["test_tta"]["images"] == metrics["test"]["images"]
    assert metrics["test_tta"]["top1"] > 0.8 and "val_tta" in metrics

    config = json.loads((run_dir / "config.json").read_text())
    assert config["preset"] == "smoke"
    assert config["config"]["epochs"] == 3 and config["seed"] == 0
    assert config["dataset"]["num_classes"] == 4 and config["dataset"]["val_size"] == 100
    assert "torch" in config["versions"] and config["device"].startswith("CPU")

    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert set(rows[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    best_epoch = max(rows, key=lambda r: float(r["val_acc"]))["epoch"]

    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert best["epoch"] == metrics["epoch"] == int(best_epoch)
    assert last["epoch"] == 3 and "train_state" in last and "train_state" not in best
    assert best["classes"] == ["blue", "green", "red", "stripes"]


LOOKAHEAD = ["--set", "lookahead_every=3", "--set", "lookahead_start_epochs=1", "--set", "lr_start=0.2",
             "--set", "lr_end=0.07"]


@pytest.mark.parametrize("extra", [[], ["--model-ema", "0.9"], LOOKAHEAD, ["--optimizer", "muon"]],
                         ids=["plain", "ema", "lookahead", "muon"])
def test_resume_after_kill_gives_the_same_history(tmp_path, synthetic_folder, extra):
    common = ["--preset", "smoke", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache",
              "--epochs", "4", "--quiet", "--no-evaluate", *extra]
    whole = tmp_path / "whole"
    assert run_cli("train", *common, "--out", whole).returncode == 0

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "cifar100", "train", *map(str, common), "--out", str(cut)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ((cut / "history.csv").exists() and len(history(cut)) >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = len(history(cut))
    assert done < 4, "the run finished before the kill; make the epochs longer"
    assert load_checkpoint(cut / "checkpoints" / "last.pt")["epoch"] == done  # intact after kill -9
    assert not list((cut / "checkpoints").glob("*.tmp"))

    resumed = run_cli("train", "--resume", cut, "--quiet", "--no-evaluate")
    assert resumed.returncode == 0, resumed.stderr
    assert without_time(history(cut)) == without_time(history(whole))
    a = load_checkpoint(cut / "checkpoints" / "last.pt")["weights"]
    b = load_checkpoint(whole / "checkpoints" / "last.pt")["weights"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_takes_every_learning_rate_from_the_edited_config(tmp_path, synthetic_folder):
    """config.json is the truth on resume: a changed muon_lr (the filters' LR, not a multiple
    of --lr) must take effect, exactly as if the run had used it from the start."""
    common = ["--preset", "smoke", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache",
              "--optimizer", "muon", "--set", "warmup_epochs=0.5", "--quiet", "--no-evaluate"]
    whole = tmp_path / "whole"
    assert run_cli("train", *common, "--epochs", "3", "--set", "muon_lr=0.02", "--out", whole).returncode == 0
    edited = tmp_path / "edited"
    assert run_cli("train", *common, "--epochs", "1", "--set", "muon_lr=0.05", "--out", edited).returncode == 0
    config = json.loads((edited / "config.json").read_text())
    config["config"].update(epochs=3, muon_lr=0.02)
    (edited / "config.json").write_text(json.dumps(config))
    resumed = run_cli("train", "--resume", edited, "--quiet", "--no-evaluate")
    assert resumed.returncode == 0, resumed.stderr
    lrs = [float(row["lr"]) for row in history(edited)[1:]]
    assert lrs == pytest.approx([float(row["lr"]) for row in history(whole)[1:]])
    # The history's lr column is --lr's group: every group's LR (the conv filters' muon_lr
    # among them) is checked in the optimizer state the two runs ended with.
    def group_lrs(run_dir):
        state = load_checkpoint(run_dir / "checkpoints" / "last.pt")["train_state"]
        return [g["lr"] for g in state["optimizer"]["param_groups"]]
    edited_lrs, whole_lrs = group_lrs(edited), group_lrs(whole)
    assert len(edited_lrs) == 3 and edited_lrs == pytest.approx(whole_lrs)


def test_a_plateau_lowers_the_next_epochs_lr_and_resume_keeps_it(tmp_path, synthetic_folder):
    """schedule=plateau is Keras's ReduceLROnPlateau on the val loss. With patience 0 and a
    min_delta no val loss can beat, only the first epoch improves (on no best at all), so every
    later epoch halves the LR of the epochs after it. The history's lr column is the LR the
    epoch's steps used, and a resumed run goes on from the cut LR, not from the peak."""
    common = ["--preset", "smoke", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache", "--lr", "0.2",
              "--schedule", "plateau", "--set", "plateau_patience=0", "--set", "plateau_factor=0.5",
              "--set", "plateau_min_delta=1000", "--quiet", "--no-evaluate"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run_cli("train", *common, "--epochs", "5", "--out", whole).returncode == 0
    logged = [float(row["lr"]) for row in history(whole)]
    assert logged == pytest.approx([0.2, 0.2, 0.1, 0.05, 0.025]), logged

    assert run_cli("train", *common, "--epochs", "3", "--out", part).returncode == 0
    config = json.loads((part / "config.json").read_text())
    config["config"]["epochs"] = 5
    (part / "config.json").write_text(json.dumps(config))
    assert run_cli("train", "--resume", part, "--quiet", "--no-evaluate").returncode == 0
    assert [float(row["lr"]) for row in history(part)] == pytest.approx(logged)


def test_torchrun_two_processes_write_one_run_folder(tmp_path, synthetic_folder):
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "cifar100", "train", "--preset", "smoke", "--dataset", str(synthetic_folder), "--device", "cpu",
         "--data-dir", str(tmp_path / "cache"), "--epochs", "2", "--quiet", "--no-evaluate", "--name", "ddp"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert [p.name for p in runs.iterdir()] == ["ddp"]
    run_dir = runs / "ddp"
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    assert len(history(run_dir)) == 2
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["top1"] > 0.5


def test_nan_loss_stops_with_a_clear_message_and_keeps_last_checkpoint(tmp_path, synthetic_folder):
    run_dir = tmp_path / "run"
    first = run_cli("train", "--preset", "smoke", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache",
                    "--out", run_dir, "--epochs", "1", "--quiet", "--no-evaluate")
    assert first.returncode == 0, first.stderr
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()

    # Continue for a second epoch with an absurd learning rate: the loss overflows.
    config = json.loads((run_dir / "config.json").read_text())
    config["config"].update(epochs=2, lr=1e38)
    (run_dir / "config.json").write_text(json.dumps(config))
    result = run_cli("train", "--resume", run_dir, "--quiet", "--no-evaluate")

    assert result.returncode == 2
    assert "NaN or infinite at step" in result.stderr and "--lr" in result.stderr
    assert "Traceback" not in result.stderr
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before
    assert len(history(run_dir)) == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "-1"], "epochs must be at least 1"),
        (["--batch-size", "0"], "batch size must be at least 1"),
        (["--lr", "0"], "learning rate must be a positive number"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--set", "colour=red"], "unknown setting 'colour'"),
        (["--set", "lr_end=2"], "lr_start and lr_end are fractions of the peak LR"),
    ],
)
def test_bad_settings_are_refused_before_training(tmp_path, flags, message):
    result = run_cli("train", "--dataset", "cifar10", "--data-dir", tmp_path, "--out", tmp_path / "run", *flags)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("preset", ["fast", "standard", "best"])
def test_the_gpu_presets_train_on_cifar100_end_to_end_on_a_cpu(tmp_path, mini_cifar100_dir, preset):
    """The GPU presets' models, optimizers and augmentations on CIFAR-100's 100 classes (one
    step on the mini copy: their timings need a GPU; that they run is checked everywhere)."""
    run_dir = tmp_path / "run"
    result = run_cli("train", "--preset", preset, "--dataset", "cifar100", "--data-dir", mini_cifar100_dir,
                     "--epochs", "1", "--val-size", "100", "--device", "cpu", "--quiet", "--no-evaluate", "--out", run_dir)
    assert result.returncode == 0, result.stderr
    config = json.loads((run_dir / "config.json").read_text())
    assert config["preset"] == preset and config["dataset"]["num_classes"] == 100
    assert len(history(run_dir)) == 1
    assert 0 <= json.loads((run_dir / "metrics.json").read_text())["test"]["top1"] <= 1


def test_without_a_validation_split_the_best_epoch_is_chosen_on_training_accuracy(tmp_path, synthetic_folder):
    """--val-size 0: no validation numbers are invented (the history says nan), best.pt is the
    epoch of the highest training accuracy, and the evaluation reports no val split."""
    from cifar100.runs import RunFolder, best_epoch

    run_dir = tmp_path / "run"
    result = run_cli("train", "--preset", "smoke", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache",
                     "--out", run_dir, "--epochs", "4", "--val-size", "0", "--quiet")
    assert result.returncode == 0, result.stderr
    rows = history(run_dir)
    assert all(r["val_acc"] == "nan" and r["val_loss"] == "nan" for r in rows)
    train_accs = [float(r["train_acc"]) for r in rows]
    chosen = train_accs.index(max(train_accs)) + 1  # the first of equal bests
    assert best_epoch(RunFolder(run_dir).read_history()) == chosen
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["epoch"] == chosen
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epoch"] == chosen and "val" not in metrics and metrics["test"]["top1"] > 0.5


def test_the_best_epoch_rule_is_the_first_highest_score():
    from cifar100.runs import best_epoch

    def row(epoch, val, train=0.5):
        return {"epoch": epoch, "val_acc": val, "train_acc": train}

    assert best_epoch([row(1, 0.3), row(2, 0.6), row(3, 0.6), row(4, 0.5)]) == 2
    assert best_epoch([row(1, float("nan"), 0.2), row(2, float("nan"), 0.9), row(3, float("nan"), 0.4)]) == 2
    assert best_epoch([]) is None
