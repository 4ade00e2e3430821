"""What must hold when things go wrong around training: Ctrl-C keeps the last epoch, a run
folder that cannot be written is refused before training, checkpoints are data (a pickle that
would run code is refused), and a checkpoint that does not match gets a clear error."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifar100 import fileio
from cifar100.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from cifar100.errors import CheckpointError
from cifar100.inference import load_model
from run_fixtures import SYNTHETIC_CLASSES, run_cli, write_synthetic_folder


def history_rows(run_dir: Path) -> int:
    path = run_dir / "history.csv"
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_saves_and_exits_cleanly_then_resume_finishes(tmp_path, synthetic_folder, sig, code):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar100", "train", "--preset", "smoke", "--dataset", str(synthetic_folder),
         "--data-dir", str(tmp_path / "cache"), "--out", str(run_dir), "--epochs", "6", "--quiet", "--no-evaluate"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # A suite started in the background by a non-interactive shell (`pytest &`) inherits
        # SIGINT ignored, and Python then never turns it into KeyboardInterrupt: the child
        # would train to the end. Start it the way a terminal does, with SIGINT at its default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while history_rows(run_dir) < 1:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert f"Continue with: cifar100 train --resume {run_dir}" in stderr
    assert "Traceback" not in stderr
    held = load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"]
    assert 1 <= held < 6 and history_rows(run_dir) == held

    resumed = run_cli("train", "--resume", run_dir, "--quiet", "--no-evaluate")
    assert resumed.returncode == 0, resumed.stderr
    assert history_rows(run_dir) == 6


def test_unwritable_run_folder_is_refused_before_training(tmp_path, synthetic_folder):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the run folder's parent should be")
    result = run_cli("train", "--preset", "smoke", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache",
                     "--out", blocker / "run", "--quiet")
    assert result.returncode == 2
    assert "cannot write to the run folder" in result.stderr
    assert blocker.read_text().startswith("a file")


def test_a_disk_without_room_for_the_checkpoints_is_refused_before_training(tmp_path, synthetic_folder, monkeypatch):
    from cifar100 import runs
    from cifar100.errors import ConfigError
    from cifar100.training.presets import get_preset
    from cifar100.training.trainer import train

    full = shutil._ntuple_diskusage(total=10 << 30, used=(10 << 30) - 4096, free=4096)
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: full)
    with pytest.raises(ConfigError, match="not enough free disk space"):
        train(get_preset("smoke"), str(synthetic_folder), data_dir=str(tmp_path / "cache"),
              out=tmp_path / "run", quiet=True, device="cpu")
    assert not list((tmp_path / "run").rglob("*.pt")) and not (tmp_path / "run" / "history.csv").exists()


def test_failed_write_leaves_the_existing_checkpoint_intact(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"epoch": 1})
    before = target.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(target, {"epoch": 2, "weights": torch.zeros(1000)})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


class RunsCode:
    """What an attacker would pickle: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "cifar100-checkpoint", "format_version": FORMAT_VERSION, "weights": RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_model(evil)
    assert not marker.exists()

    result = run_cli("evaluate", evil)
    assert result.returncode == 2 and "refusing to load" in result.stderr
    assert not marker.exists()


def test_checkpoint_format_version_and_garbage_are_named(tmp_path):
    future = tmp_path / "future.pt"
    torch.save({"format": "cifar100-checkpoint", "format_version": FORMAT_VERSION + 1}, future)
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}"):
        load_checkpoint(future)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "junk.pt").write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a cifar100 checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_resuming_with_a_dataset_of_other_classes_is_a_clear_error(tmp_path, synthetic_folder):
    run_dir = tmp_path / "run"
    first = run_cli("train", "--preset", "smoke", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache",
                    "--out", run_dir, "--epochs", "2", "--quiet", "--no-evaluate")
    assert first.returncode == 0, first.stderr
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    other = write_synthetic_folder(tmp_path / "other", train_per_class=40, test_per_class=5)
    # Drop one class: the dataset now has 3 classes where the checkpoint's head has 4.
    for split in ("train", "test"):
        for f in (other / split / SYNTHETIC_CLASSES[0]).iterdir():
            f.unlink()
        (other / split / SYNTHETIC_CLASSES[0]).rmdir()
    config = json.loads((run_dir / "config.json").read_text())
    config["dataset"]["spec"] = str(other)
    config["config"]["epochs"] = 3
    (run_dir / "config.json").write_text(json.dumps(config))

    result = run_cli("train", "--resume", run_dir, "--quiet", "--no-evaluate")
    assert result.returncode == 2
    assert "does not match" in result.stderr and "num_classes" in result.stderr
    assert "Traceback" not in result.stderr
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before
