"""`evaluate_run` and `cifar100 evaluate`: on a run folder built by hand (a tiny StageNet trained
for two epochs with plain SGD on the real mini CIFAR-100), every number in metrics.json agrees
with an independent computation from the model's outputs, every figure is written at its
size, and bad input ends in a named error. Grad-CAM is checked to point at the object on a
task where the object's place is known. One end-to-end test reads what the real engine's
`smoke_run` ends with."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cifar100.checkpoint import save_checkpoint
from cifar100.cli.main import main
from cifar100.data.types import Dataset, Split, split_train_val
from cifar100.data.sources import load_dataset
from cifar100.runs import RunFolder
from cifar100.errors import CheckpointError, DatasetError
from cifar100.evaluation.evaluate import evaluate_run
from cifar100.evaluation.gradcam import feature_map_module, grad_cam
from cifar100.inference import as_input, load_model
from cifar100.training.models import create_model
from run_fixtures import run_cli

HAND_BUILT_VAL_SIZE = 100
HAND_BUILT_WIDTHS = (16, 32, 32)

# Every figure an evaluation of a CIFAR-100 run draws, with its pixel size (plots.py sizes x DPI).
CIFAR100_FIGURES = {
    "history": (1500, 450),
    "confusion_matrix": (1400, 1200),
    "superclass_confusion": (1100, 1000),
    "per_class_accuracy": (1600, 650),
    "reliability": (700, 750),
    "prediction_gallery": (1520, 960),
    "confident_mistakes": (1520, 960),
    "gradcam": (1600, 520),
}


def normalisation(images: np.ndarray) -> tuple[list[float], list[float]]:
    x = images.reshape(-1, 3).astype(np.float64) / 255
    return x.mean(0).tolist(), x.std(0).tolist()


def train_by_hand(net: torch.nn.Module, train: Split, mean, std, epochs: int, val: Split | None = None,
                  lr: float = 0.05, batch: int = 64, seed: int = 0):
    """Plain SGD, yielding (epoch, history row) after each epoch."""
    gen = torch.Generator().manual_seed(seed)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def inputs(images):
        return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - m) / s

    if hasattr(net, "whiten"):
        net.whiten.fit(inputs(train.images[:1000]))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr, momentum=0.9, nesterov=True)
    labels = torch.from_numpy(train.labels)
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        net.train()
        order = torch.randperm(len(labels), generator=gen)
        loss_sum, correct = 0.0, 0
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            logits = net(inputs(train.images[idx.numpy()]))
            loss = F.cross_entropy(logits, labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == labels[idx]).sum().item()
        net.eval()
        row = {"epoch": epoch, "train_loss": loss_sum / len(labels), "train_acc": correct / len(labels),
               "val_loss": float("nan"), "val_acc": float("nan"), "lr": lr, "seconds": 0.0}
        if val is not None:
            with torch.no_grad():
                logits = net(inputs(val.images))
            row["val_loss"] = F.cross_entropy(logits, torch.from_numpy(val.labels)).item()
            row["val_acc"] = (logits.argmax(1).numpy() == val.labels).mean().item()
        row["seconds"] = time.perf_counter() - started
        yield epoch, row


def build_run(root: Path, dataset: Dataset, data_dir: Path | None, epochs: int = 2) -> Path:
    """A run folder in the layout the engine writes (config.json, history.csv, best.pt and
    last.pt), made by hand so these tests do not depend on the engine's training loop."""
    torch.manual_seed(0)
    train, val = split_train_val(dataset.train, HAND_BUILT_VAL_SIZE, seed=0)
    net = create_model("stagenet", num_classes=dataset.num_classes, widths=HAND_BUILT_WIDTHS)
    mean, std = normalisation(train.images)
    info = {"spec": dataset.spec, "name": dataset.name, "data_dir": str(data_dir) if data_dir else None,
            "val_size": HAND_BUILT_VAL_SIZE, "split_seed": 0, "num_classes": dataset.num_classes}
    run = RunFolder(root)
    rows, best_acc = [], -1.0
    for epoch, row in train_by_hand(net, train, mean, std, epochs, val):
        rows.append(row)
        payload = {
            "model": {"arch": "stagenet", "kwargs": {"num_classes": dataset.num_classes, "widths": list(HAND_BUILT_WIDTHS)}},
            "weights": {k: v.clone() for k, v in net.state_dict().items()},
            "classes": dataset.classes, "coarse_classes": dataset.coarse_classes,
            "fine_to_coarse": dataset.fine_to_coarse, "dataset": info,
            "normalization": {"mean": mean, "std": std}, "epoch": epoch,
            "metrics": {"val_acc": row["val_acc"], "val_loss": row["val_loss"]},
        }
        if row["val_acc"] > best_acc:
            best_acc = row["val_acc"]
            save_checkpoint(run.best, payload)
        save_checkpoint(run.last, payload)
    run.write_history(rows)
    (root / "config.json").write_text(json.dumps({
        "name": root.name, "preset": "hand-built", "config": {"model": "stagenet", "epochs": epochs, "lr": 0.05},
        "dataset": info, "seed": 0, "model": {"arch": "stagenet", "parameters": sum(p.numel() for p in net.parameters())},
        "command": f"(built by hand in {Path(__file__).name})",
    }))
    # What the engine leaves when it skips the full evaluation (train --no-evaluate).
    (root / "metrics.json").write_text(json.dumps({"checkpoint": "checkpoints/best.pt", "test": {"top1": 0.0}}))
    return root


@pytest.fixture(scope="session")
def mini_cifar100(mini_cifar100_dir) -> Dataset:
    return load_dataset("cifar100", mini_cifar100_dir, download=False, quiet=True)


@pytest.fixture(scope="session")
def hand_built_run(tmp_path_factory, mini_cifar100, mini_cifar100_dir) -> Path:
    """A run on the real mini CIFAR-100, not yet evaluated. Read-only: copy it to change it."""
    return build_run(tmp_path_factory.mktemp("hand-built") / "mini-run", mini_cifar100, mini_cifar100_dir)


@pytest.fixture(scope="session")
def evaluated_run(tmp_path_factory, hand_built_run, mini_cifar100_dir) -> tuple[Path, dict]:
    """A copy of the hand-built run after `evaluate_run(..., tta=True)`, loading the dataset
    the way a user's evaluation does (from config.json's data_dir)."""
    run = tmp_path_factory.mktemp("evaluated") / hand_built_run.name
    shutil.copytree(hand_built_run, run)
    return run, evaluate_run(run, tta=True, quiet=True)


@torch.no_grad()
def tta_by_hand(model, images: np.ndarray) -> torch.Tensor:
    """The six views of the TTA description, built here: each image and its mirror image count
    half; shifted one pixel up-left and down-right (reflect padding), with mirrors, a quarter each."""
    net, x = model.classifier, as_input(images)

    def with_mirror(v):
        return (net(v) + net(torch.flip(v, dims=[3]))) / 2

    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[:, :, :32, :32], padded[:, :, 2:, 2:]
    return with_mirror(x) / 2 + with_mirror(up_left) / 4 + with_mirror(down_right) / 4


def test_tta_and_plain_logits_from_one_pass_match_separate_passes(hand_built_run, mini_cifar100):
    model = load_model(hand_built_run)
    images = mini_cifar100.test.images[:300]
    plain, augmented = model.plain_and_tta_logits(images, batch_size=128)
    assert torch.allclose(plain, model.logits(images), atol=1e-5)
    assert torch.allclose(augmented, model.logits(images, tta=True), atol=1e-5)
    assert torch.allclose(augmented, tta_by_hand(model, images), atol=1e-4)
    assert not torch.allclose(augmented, plain, atol=1e-3)  # the views do change the logits


def expected_numbers(run: Path, dataset: Dataset, which: str = "best", tta: bool = False) -> dict[str, float]:
    """The headline numbers computed independently: torch's softmax and cross-entropy on the
    loaded model's logits, and the superclass mapping read off the official coarse labels."""
    model = load_model(run, which)
    logits = tta_by_hand(model, dataset.test.images) if tta else model.logits(dataset.test.images)
    labels = torch.from_numpy(dataset.test.labels)
    predicted = logits.argmax(1)
    coarse = torch.from_numpy(dataset.test.coarse_labels)
    mapping = torch.tensor(dataset.fine_to_coarse)
    return {
        "top1": (predicted == labels).float().mean().item(),
        "top5": (logits.topk(5, dim=1).indices == labels[:, None]).any(1).float().mean().item(),
        "loss": F.cross_entropy(logits, labels).item(),
        "coarse_top1": (mapping[predicted] == coarse).float().mean().item(),
        "epoch": model.epoch,
    }


def test_metrics_agree_with_an_independent_computation(evaluated_run, mini_cifar100):
    run, metrics = evaluated_run
    assert json.loads((run / "metrics.json").read_text()) == metrics
    expected = expected_numbers(run, mini_cifar100)
    assert metrics["checkpoint"] == "checkpoints/best.pt" and metrics["epoch"] == expected["epoch"]
    test = metrics["test"]
    assert test["split"] == "test" and test["tta"] is False and test["images"] == 916
    for key in ("top1", "top5", "loss", "coarse_top1"):
        assert test[key] == pytest.approx(expected[key], abs=1e-5), key
    flipped = expected_numbers(run, mini_cifar100, tta=True)
    assert metrics["test_tta"]["tta"] is True
    assert metrics["test_tta"]["top1"] == pytest.approx(flipped["top1"], abs=1e-5)
    assert "flip" in metrics["tta"] and "shift" in metrics["tta"]

    # Per class: support is the class's test images; the accuracies average back to top-1.
    per_class = test["per_class"]
    assert [c["class"] for c in per_class] == mini_cifar100.classes
    counts = np.bincount(mini_cifar100.test.labels, minlength=100)
    assert [c["support"] for c in per_class] == counts.tolist()
    hits = sum(c["accuracy"] * c["support"] for c in per_class if c["support"])
    assert hits / counts.sum() == pytest.approx(test["top1"], abs=1e-4)
    assert all(c["accuracy"] == c["recall"] for c in per_class)
    assert sum(c["support"] for c in test["per_superclass"]) == 916
    assert test["most_confused"] and all(p["true"] != p["predicted"] for p in test["most_confused"])
    assert sum(test["reliability"]["count"]) == 916 and 0 <= test["ece"] <= 1

    # The validation split is the run's own seeded split of the training images.
    val = split_train_val(mini_cifar100.train, HAND_BUILT_VAL_SIZE, seed=0)[1]
    assert metrics["val"]["images"] == len(val) == HAND_BUILT_VAL_SIZE
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert metrics["val"]["top1"] == pytest.approx(best["metrics"]["val_acc"], abs=1e-6)

    # Training time is the run's own per-epoch record.
    seconds = [float(line.split(",")[-1]) for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert metrics["train_seconds"] == pytest.approx(sum(seconds), abs=0.01) and metrics["train_seconds"] > 0


def test_every_figure_is_written_at_its_size(evaluated_run):
    run, metrics = evaluated_run
    assert set(metrics["figures"]) >= set(CIFAR100_FIGURES)
    for key, size in CIFAR100_FIGURES.items():
        path = run / metrics["figures"][key]
        assert path.parent == run / "plots" and path.stat().st_size > 5000, key
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == size, key
    assert (run / "report.html").stat().st_size > 100_000


def evaluate_in_process(capsys, *args) -> tuple[int, str, str]:
    """The CLI's own entry point, in this process (a subprocess costs seconds of imports)."""
    code = main(["evaluate", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_evaluates_a_bare_checkpoint_and_prints_the_table(tmp_path, hand_built_run, mini_cifar100, mini_cifar100_dir, capsys):
    """A checkpoint file outside a run folder: outputs go beside it, there is no history."""
    checkpoint = tmp_path / "model.pt"
    shutil.copy(hand_built_run / "checkpoints" / "last.pt", checkpoint)
    code, out, err = evaluate_in_process(capsys, checkpoint, "--data-dir", mini_cifar100_dir, "--device", "cpu")
    assert code == 0, err
    folder = tmp_path / "model-evaluation"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(checkpoint.resolve()) and metrics["epoch"] == 2
    assert (folder / "report.html").is_file() and (folder / "plots" / "gradcam.png").is_file()
    assert "history" not in metrics["figures"] and "train_seconds" not in metrics
    assert metrics["test"]["top1"] == pytest.approx(expected_numbers(hand_built_run, mini_cifar100, "last")["top1"], abs=1e-5)

    lines = out.splitlines()
    assert lines[0] == f"checkpoint {checkpoint.resolve()} (epoch 2), dataset cifar100"
    test_row = next(line for line in lines if line.startswith("test "))
    assert test_row.split()[1:3] == ["916", f"{100 * metrics['test']['top1']:.2f}%"]
    assert test_row.split()[-1] == f"{100 * metrics['test']['coarse_top1']:.2f}%"
    assert any(line.startswith("val ") for line in lines)
    assert not any("flip" in line for line in lines)  # no TTA unless asked
    assert lines[-1].endswith(f"{folder / 'report.html'}")


def test_interrupted_run_is_evaluated_from_last_checkpoint(tmp_path, hand_built_run, mini_cifar100):
    """Stopped after epoch 1, before any best.pt was kept: last.pt is evaluated; --out puts
    the outputs elsewhere and leaves the run folder as it was."""
    run = tmp_path / "interrupted"
    shutil.copytree(hand_built_run, run)
    (run / "checkpoints" / "best.pt").unlink()
    lines = (run / "history.csv").read_text().splitlines(keepends=True)
    (run / "history.csv").write_text("".join(lines[:2]))
    out = tmp_path / "elsewhere"
    metrics = evaluate_run(run, out_dir=out, quiet=True)
    assert metrics["checkpoint"] == str((run / "checkpoints" / "last.pt").resolve())
    assert metrics["test"]["top1"] == pytest.approx(expected_numbers(run, mini_cifar100, "last")["top1"], abs=1e-5)
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(f"{key}.png" for key in metrics["figures"])
    assert "history" in metrics["figures"]  # the one epoch there is
    assert json.loads((run / "metrics.json").read_text()) == json.loads((hand_built_run / "metrics.json").read_text())
    assert f"cifar100 evaluate {run} --out {out}" in (out / "report.html").read_text()


def test_cli_errors_are_named_and_leave_the_run_intact(tmp_path, hand_built_run, synthetic_folder, capsys):
    code, _, err = evaluate_in_process(capsys, tmp_path / "no-such-run")
    assert code == 2 and "no run folder, checkpoint file or weights folder" in err

    empty = tmp_path / "empty-run"
    empty.mkdir()
    code, _, err = evaluate_in_process(capsys, empty)
    assert code == 2 and "holds no checkpoint" in err

    with pytest.raises(SystemExit):
        evaluate_in_process(capsys, hand_built_run, "--which", "newest")
    assert "invalid choice: 'newest'" in capsys.readouterr().err

    # The right checkpoint on the wrong data: a clear refusal, and metrics.json untouched.
    run = tmp_path / "run"
    shutil.copytree(hand_built_run, run)
    before = (run / "metrics.json").read_bytes()
    config = json.loads((run / "config.json").read_text())
    checkpoint = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    checkpoint["dataset"]["spec"] = str(synthetic_folder)
    torch.save(checkpoint, run / "checkpoints" / "best.pt")
    config["dataset"]["data_dir"] = str(tmp_path / "cache")
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = evaluate_in_process(capsys, run)
    assert code == 2 and "trained on 100 classes" in err
    assert (run / "metrics.json").read_bytes() == before
    assert not (run / "plots").exists()

    # Through the real entry point too.
    result = run_cli("evaluate", empty)
    assert result.returncode == 2 and result.stderr.startswith("cifar100: error:")


def test_dataset_passed_in_must_match_the_model(hand_built_run, synthetic_folder, tmp_path):
    other = load_dataset(str(synthetic_folder), tmp_path / "cache", quiet=True)
    with pytest.raises(DatasetError, match="evaluate it on the data it was trained on"):
        evaluate_run(hand_built_run, dataset=other, out_dir=tmp_path / "out", quiet=True)
    with pytest.raises(CheckpointError):
        evaluate_run(tmp_path / "missing.pt", quiet=True)


def test_a_dataset_that_gained_or_lost_its_val_folder_is_refused():
    from types import SimpleNamespace

    from cifar100.evaluation.evaluate import train_val_splits

    split = Split(np.zeros((6, 32, 32, 3), np.uint8), np.arange(6) % 2)
    with_val = Dataset("pets", ["cat", "dog"], split, split, spec="/data/pets", val=split.subset(np.arange(2)))
    without = Dataset("pets", ["cat", "dog"], split, split, spec="/data/pets")

    def model(val_from: str) -> SimpleNamespace:
        info = {"spec": "/data/pets", "val_size": 0.5, "split_seed": 0, "val_from": val_from}
        return SimpleNamespace(checkpoint_path=Path("run/best.pt"), dataset=info)

    with pytest.raises(DatasetError, match=r"had its own val/ folder, and now it has none: the dataset changed"):
        train_val_splits(model("folder"), without)
    with pytest.raises(DatasetError, match=r"had no val/ folder, and now it has one: the dataset changed"):
        train_val_splits(model("train"), with_val)
    assert train_val_splits(model("folder"), with_val)[1] is with_val.val
    assert len(train_val_splits(model("train"), without)[1]) == 3


# --- Grad-CAM ---------------------------------------------------------------------------------


def square_images(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gray noise with one 8x8 coloured square at a random place; the class is the colour.
    Returns images, labels and each square's top-left corner."""
    colors = np.array([[230, 40, 40], [40, 200, 40], [40, 40, 230], [230, 230, 40]])
    images = rng.integers(90, 150, (count, 32, 32, 3)).astype(np.uint8)
    labels = rng.integers(0, len(colors), count)
    corners = rng.integers(0, 32 - 8, (count, 2))
    for image, label, (y, x) in zip(images, labels, corners):
        image[y : y + 8, x : x + 8] = colors[label]
    return images, labels.astype(np.int64), corners


@pytest.mark.parametrize("arch", ["stagenet", "keras_seed"])
def test_feature_map_is_the_last_spatial_stage(arch):
    net = create_model(arch, num_classes=4, widths=(8, 16, 16))  # in training mode, as created
    before = {k: v.clone() for k, v in net.state_dict().items()}
    layer = feature_map_module(net)
    assert layer is (net.stages if arch == "stagenet" else net.features)
    # The probe pass leaves the model as it found it: mode and BatchNorm statistics.
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_gradcam_points_at_the_object():
    from cifar100.inference import Classifier

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    images, labels, _ = square_images(300, rng)
    net = create_model("stagenet", num_classes=4, widths=(16, 32, 32))
    mean, std = normalisation(images)
    for _ in train_by_hand(net, Split(images, labels), mean, std, epochs=3, lr=0.05, batch=32):
        pass
    classifier = Classifier(net, mean, std).eval()
    test_images, test_labels, corners = square_images(40, rng)
    heatmaps, explained = grad_cam(classifier, test_images)
    with torch.no_grad():
        predicted = classifier(torch.from_numpy(test_images).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
    assert (explained == predicted).all()
    assert (predicted == test_labels).mean() > 0.9
    assert heatmaps.shape == (40, 32, 32) and heatmaps.min() >= 0 and np.allclose(heatmaps.max(axis=(1, 2)), 1)
    # The heat on the square against the heat over the whole image: 1 would mean the map
    # ignores the object; the square covers 1/16 of the image, so a sharp map could reach 16.
    # The last feature map is 3x3, so the heat spreads around the square: expect a few times 1.
    ratios = np.array([heat[y : y + 8, x : x + 8].mean() / heat.mean() for heat, (y, x) in zip(heatmaps, corners)])
    assert ratios.min() > 1.3 and np.median(ratios) > 2.2



# --- end to end on a run the real engine trained ----------------------------------------------


def test_smoke_run_ends_with_the_full_evaluation(smoke_run):
    """`cifar100 train` itself evaluates at the end: metrics.json is the complete one."""
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert metrics["checkpoint"] == "checkpoints/best.pt"
    assert {"top1", "top5", "loss", "ece", "per_class", "most_confused"} <= set(metrics["test"])
    assert metrics["val"]["images"] > 0 and metrics["train_seconds"] > 0
    # The number is the model's: recomputed here from best.pt on the run's own test images.
    config = json.loads((smoke_run / "config.json").read_text())
    dataset = load_dataset(config["dataset"]["spec"], config["dataset"]["data_dir"], quiet=True)
    predicted = load_model(smoke_run).logits(dataset.test.images).argmax(1).numpy()
    assert metrics["test"]["top1"] == pytest.approx((predicted == dataset.test.labels).mean(), abs=1e-6)
    for key in ("history", "confusion_matrix", "per_class_accuracy", "reliability", "prediction_gallery",
                "confident_mistakes", "gradcam"):
        assert (smoke_run / metrics["figures"][key]).stat().st_size > 5000
    assert "superclass_confusion" not in metrics["figures"]  # CIFAR-10 has no superclasses
    assert (smoke_run / "report.html").is_file()


def test_probabilities_are_calibrated_on_the_validation_split(smoke_run):
    """Label smoothing makes the raw softmax under-confident; best.pt carries a temperature
    fitted on the validation split, and every probability the tool reports uses it."""
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    with open(smoke_run / "history.csv", newline="") as f:
        best = next(row for row in csv.DictReader(f) if int(row["epoch"]) == metrics["epoch"])
    model = load_model(smoke_run)
    assert model.temperature == pytest.approx(metrics["temperature"]) and model.temperature != 1.0
    # Fitted on exactly that split: its loss can only be lower than the raw logits' loss there.
    assert metrics["val"]["loss"] <= float(best["val_loss"]) + 1e-5
    # Predictions are the raw network's; probabilities are softmax(raw logits / temperature).
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    with torch.no_grad():
        raw = model.classifier.net((x - mean) / std)
    np.testing.assert_allclose(model.probabilities(images), F.softmax(raw / model.temperature, 1).numpy(), atol=1e-6)
    assert (model.probabilities(images).argmax(1) == raw.argmax(1).numpy()).all()
