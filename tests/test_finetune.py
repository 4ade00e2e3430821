"""`--init-from`: a run that starts from a trained model's weights (its head replaced when the
classes differ), through the real command and the real Trainer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from cifar100.data.sources import load_dataset
from cifar100.model_files import read_model
from cifar100.training.runtime import start_runtime
from cifar100.training.trainer import Trainer, configure_run
from run_fixtures import run_cli


def three_class_folder(synthetic_folder: Path, root: Path) -> Path:
    """The synthetic task without its "green" class: other classes, so a new head."""
    for split in ("train", "test"):
        for name in ("blue", "red", "stripes"):
            shutil.copytree(synthetic_folder / split / name, root / split / name)
    return root


def test_fine_tuning_replaces_the_head_and_keeps_the_rest(synthetic_run, synthetic_folder, tmp_path):
    data = three_class_folder(synthetic_folder, tmp_path / "three")
    dataset = load_dataset(str(data), tmp_path / "cache", quiet=True)
    _, cfg = configure_run("smoke", {"init_from": str(synthetic_run), "epochs": 1}, "cpu")
    source = read_model(synthetic_run).payload
    assert cfg.model_kwargs == {k: v for k, v in source["model"]["kwargs"].items() if k != "num_classes"}

    trainer = Trainer(cfg, dataset, tmp_path / "run", start_runtime("cpu"), quiet=True)
    before = trainer.net.state_dict()
    for name, value in source["weights"].items():
        if name.startswith("head."):
            assert before[name].shape[0] == 3 and value.shape[0] == 4  # a new head for 3 classes
        else:
            assert torch.equal(before[name], value), name
    # The source's normalisation, the statistics its features were learned under.
    assert trainer.mean == source["normalization"]["mean"]


def test_same_classes_keep_the_head_too(synthetic_run, synthetic_folder, tmp_path):
    dataset = load_dataset(str(synthetic_folder), tmp_path / "cache", quiet=True)
    _, cfg = configure_run("smoke", {"init_from": str(synthetic_run)}, "cpu")
    trainer = Trainer(cfg, dataset, tmp_path / "run", start_runtime("cpu"), quiet=True)
    source = read_model(synthetic_run).payload["weights"]
    assert torch.equal(trainer.net.state_dict()["head.weight"], source["head.weight"])


def test_init_from_through_the_command_line(synthetic_run, synthetic_folder, tmp_path):
    data = three_class_folder(synthetic_folder, tmp_path / "three")
    source = shutil.copytree(synthetic_run, tmp_path / "source")
    out = tmp_path / "run"
    result = run_cli("train", "--preset", "smoke", "--dataset", data, "--data-dir", tmp_path / "cache",
                     "--out", out, "--epochs", "2", "--init-from", source, "--no-evaluate")
    assert result.returncode == 0, result.stderr
    assert "head replaced for this dataset's 3 classes" in result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["init_from"]["head_replaced"] is True and config["init_from"]["source_classes"] == 4
    assert config["config"]["init_from"] == str(source.resolve())
    assert json.loads((out / "metrics.json").read_text())["test"]["top1"] >= 0

    # A fine-tuned run resumes like any other (more epochs, from its own last.pt), also once the
    # model it started from is gone: everything it needs is in its checkpoint.
    shutil.rmtree(source)
    config["config"]["epochs"] = 3
    (out / "config.json").write_text(json.dumps(config))
    result = run_cli("train", "--resume", out, "--no-evaluate", "--quiet")
    assert result.returncode == 0, result.stderr
    assert len((out / "history.csv").read_text().strip().splitlines()) == 1 + 3


def test_init_from_errors_are_clear(synthetic_run, synthetic_folder, tmp_path):
    common = ("train", "--preset", "smoke", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache",
              "--out", tmp_path / "run")
    result = run_cli(*common, "--init-from", tmp_path / "nowhere")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no run folder, checkpoint file or weights folder" in result.stderr

    result = run_cli(*common, "--init-from", synthetic_run, "--set", 'model_kwargs={"widths": [8, 8, 8]}')
    assert result.returncode == 2 and "--init-from brings its own network" in result.stderr
    assert not (tmp_path / "run").exists()


def test_init_from_the_shipped_model(synthetic_folder, tmp_path):
    dataset = load_dataset(str(synthetic_folder), tmp_path / "cache", quiet=True)
    _, cfg = configure_run("smoke", {"init_from": "pretrained"}, "cpu")
    assert cfg.init_from == "pretrained"
    trainer = Trainer(cfg, dataset, tmp_path / "run", start_runtime("cpu"), quiet=True)
    shipped = read_model("pretrained").payload
    state = trainer.net.state_dict()
    assert state["head.weight"].shape[0] == 4 and shipped["weights"]["head.weight"].shape[0] == 100
    kept = [name for name in shipped["weights"] if not name.startswith("head.")]
    assert kept and all(torch.equal(state[name], shipped["weights"][name]) for name in kept)
