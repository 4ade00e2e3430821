"""`cifar100 data download` and `cifar100 data stats`, run as real processes; and image folders
of each layout through `cifar100 train`, `evaluate` and `train --resume`, which must all see the
same splits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar100.data.cifar_archives import CIFAR100, MIRROR_ENV
from cifar100.data.types import channel_mean_std, split_train_val
from cifar100.data.sources import DATA_DIR_ENV, load_dataset


def cifar100_cli(*args, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (MIRROR_ENV, DATA_DIR_ENV)}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "cifar100", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cifar100: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def stats_run(mini_cifar100_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("stats")
    result = cifar100_cli("data", "stats", "--data-dir", mini_cifar100_dir, "--val-size", 100, "--seed", 3,
                          "--out", out, "--no-download")
    assert result.returncode == 0, result.stderr
    return result, out


def test_stats_numbers_match_the_dataset(stats_run, mini_cifar100_dir):
    result, out = stats_run
    stats = json.loads((out / "stats.json").read_text())
    dataset = load_dataset("cifar100", mini_cifar100_dir, download=False)
    train, val = split_train_val(dataset.train, 100, seed=3)
    assert stats["dataset"] == "cifar100" and stats["num_classes"] == 100 and stats["num_coarse_classes"] == 20
    for name, split in (("train", train), ("val", val), ("test", dataset.test)):
        entry = stats["splits"][name]
        assert entry["images"] == len(split)
        assert list(entry["per_class"].values()) == np.bincount(split.labels, minlength=100).tolist()
        assert list(entry["per_class"]) == dataset.classes
        mean, std = channel_mean_std(split.images)
        np.testing.assert_allclose(entry["mean"], mean, atol=1e-6)
        np.testing.assert_allclose(entry["std"], std, atol=1e-6)
    assert (stats["splits"]["train"]["images"], stats["splits"]["val"]["images"]) == (1017, 100)


def test_stats_prints_a_table_and_draws_the_figure(stats_run):
    result, out = stats_run
    lines = result.stdout.splitlines()
    assert lines[0].startswith("cifar100: 100 classes in 20 superclasses; train 1,017, val 100, test 916 images")
    apple = next(line for line in lines if line.startswith("apple "))
    counts = json.loads((out / "stats.json").read_text())["splits"]
    assert apple.split()[1:] == [str(counts[s]["per_class"]["apple"]) for s in ("train", "val", "test")]
    with Image.open(out / "class_distribution.png") as png:
        assert png.size == (1600, 600)
        assert len(png.convert("RGB").getcolors(1 << 16) or range(1 << 16)) > 20  # a drawing, not a blank


def test_stats_of_an_image_folder_without_validation(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for name, color in (("cats", (200, 100, 0)), ("dogs", (0, 100, 200))):
            folder = tmp_path / "pets" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), color).save(folder / f"{i}.png")
    result = cifar100_cli("data", "stats", "--dataset", tmp_path / "pets", "--data-dir", tmp_path / "data",
                          "--val-size", 0, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["splits"]["train"]["per_class"] == {"cats": 4, "dogs": 4}
    assert stats["splits"]["val"] == {"images": 0, "per_class": {"cats": 0, "dogs": 0}, "mean": None, "std": None}
    np.testing.assert_allclose(stats["splits"]["test"]["mean"], [100 / 255, 100 / 255, 100 / 255], atol=1e-6)
    assert stats["splits"]["test"]["std"][1] == 0


def test_download_when_already_there_is_offline(mini_cifar100_dir):
    result = cifar100_cli("data", "download", "--data-dir", mini_cifar100_dir, env_extra={MIRROR_ENV: "http://127.0.0.1:9"})
    assert result.returncode == 0, result.stderr
    assert "cifar100 is ready" in result.stdout and "1,117 train and 916 test images, 100 classes" in result.stdout


def test_download_with_the_server_down(tmp_path, closed_port_url):
    result = cifar100_cli("data", "download", "--data-dir", tmp_path, env_extra={MIRROR_ENV: closed_port_url})
    assert_one_line_error(result, f"{closed_port_url}/{CIFAR100.filename}", CIFAR100.md5, str(tmp_path / CIFAR100.filename))
    assert list(tmp_path.iterdir()) == []


def test_download_of_a_file_with_the_wrong_checksum(tmp_path, http_server, mini_cifar100_archive):
    http_server.files[CIFAR100.filename] = mini_cifar100_archive.read_bytes()
    result = cifar100_cli("data", "download", "--data-dir", tmp_path, "--quiet", env_extra={MIRROR_ENV: http_server.base_url})
    assert_one_line_error(result, http_server.url(CIFAR100.filename), CIFAR100.md5, "has md5")
    assert list(tmp_path.iterdir()) == []


def test_data_dir_from_the_environment(mini_cifar100_dir):
    result = cifar100_cli("data", "stats", "--val-size", 10, "--no-download", env_extra={DATA_DIR_ENV: str(mini_cifar100_dir)})
    assert result.returncode == 0, result.stderr
    assert "train 1,107, val 10, test 916" in result.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--val-size", "-1"], "--val-size must be >= 0, got -1"),
        (["--val-size", "12.5"], "--val-size 12.5 is neither a fraction below 1 (0.1) nor a whole count (5000)"),
        (["--val-size", "5000"], "must be smaller than the training set (1117 images)"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    ],
)
def test_stats_bad_arguments(mini_cifar100_dir, args, needle):
    result = cifar100_cli("data", "stats", "--data-dir", mini_cifar100_dir, "--no-download", *args)
    assert_one_line_error(result, needle)


def test_without_an_action_shows_the_actions():
    result = cifar100_cli("data")
    assert result.returncode == 2 and "download" in result.stderr and "stats" in result.stderr


# --- image folders of each layout: stats, train, evaluate, resume ------------------------------


def write_pets(root: Path, per_split: dict[str, int] | None = None, per_class: dict[str, int] | None = None) -> Path:
    """40x30 noise PNGs: `per_split` images per class in each split folder (train/val/test), or
    `per_class` images of each class in <class>/<image> folders."""
    rng = np.random.default_rng(0)
    folders = ({f"{split}/{name}": n for split, n in per_split.items() for name in ("cat", "dog", "fox")}
               if per_split else per_class)
    for folder, n in folders.items():
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / folder / f"{i}.png")
    return root


def test_stats_of_a_folder_with_its_own_validation_split(tmp_path):
    pets = write_pets(tmp_path / "pets", per_split={"train": 5, "val": 2, "test": 3})
    result = cifar100_cli("data", "stats", "--dataset", pets, "--data-dir", tmp_path / "data", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "train 15, val 6, test 9 images (val from the folder's own val/)" in result.stdout.splitlines()[0]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["val_from"] == "folder" and stats["splits"]["val"]["per_class"] == {"cat": 2, "dog": 2, "fox": 2}
    assert "warning" not in result.stderr
    # A --val-size the val/ folder leaves unused: told in one line, and the run goes on.
    result = cifar100_cli("data", "stats", "--dataset", pets, "--data-dir", tmp_path / "data", "--val-size", 0.3)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "warning" in line] == [
        ("cifar100: warning: val_size 0.3 is not used: the dataset 'pets' has its own val/ (or validation/) folder, "
         "which is the validation split")]


def test_stats_of_class_folders_carves_test_and_validation(tmp_path):
    pets = write_pets(tmp_path / "pets", per_class={"cat": 10, "dog": 10, "fox": 10})
    result = cifar100_cli("data", "stats", "--dataset", pets, "--data-dir", tmp_path / "data", "--test-size", 6,
                          "--val-size", 0.25, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    splits = json.loads((tmp_path / "out" / "stats.json").read_text())["splits"]
    assert {name: list(split["per_class"].values()) for name, split in splits.items()} == {
        "train": [6, 6, 6], "val": [2, 2, 2], "test": [2, 2, 2]}


def train_pets(pets: Path, work: Path, *flags) -> dict:
    """A real one-epoch smoke run on `pets`; returns its config.json."""
    result = cifar100_cli("train", "--preset", "smoke", "--epochs", 1, "--dataset", pets, "--data-dir", work / "data",
                          "--out", work / "run", "--no-evaluate", "--quiet", *flags)
    assert result.returncode == 0, result.stderr
    return json.loads((work / "run" / "config.json").read_text())


def test_a_val_folder_is_the_validation_split_of_a_run(tmp_path):
    pets = write_pets(tmp_path / "pets", per_split={"train": 6, "val": 2, "test": 2})
    # smoke's val_size (100 images) is more than the 18 training images: it must not be used.
    info = train_pets(pets, tmp_path)["dataset"]
    assert info["val_from"] == "folder"
    assert (info["train_images"], info["val_images"], info["test_images"]) == (18, len(list(pets.glob("val/*/*"))), 6)


def test_a_class_folder_run_is_evaluated_and_resumed_on_its_own_test_split(tmp_path):
    from cifar100.app.export import dataset_on_this_machine
    from cifar100.evaluation.evaluate import load_evaluation_dataset
    from cifar100.inference import load_model

    pets = write_pets(tmp_path / "pets", per_class={"cat": 10, "dog": 8, "fox": 6})
    config = train_pets(pets, tmp_path, "--test-size", 0.3, "--val-size", 0.2, "--set", "split_seed=5",
                        "--set", "center_crop=false")
    info = config["dataset"]
    assert (info["test_size"], info["split_seed"], info["center_crop"], info["val_from"]) == (0.3, 5, False, "train")
    carved = load_dataset(str(pets), tmp_path / "data", test_size=0.3, split_seed=5, center_crop=False)
    assert (info["train_images"] + info["val_images"], info["test_images"]) == (len(carved.train), len(carved.test)) == (17, 7)

    run = tmp_path / "run"
    result = cifar100_cli("evaluate", run, "--quiet")
    assert result.returncode == 0, result.stderr
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["images"] == 7
    assert [c["support"] for c in test["per_class"]] == np.bincount(carved.test.labels, minlength=3).tolist()

    # Training and evaluation both read the squashed images (center_crop=false): one cache file.
    assert [p.name.endswith("-squashed.npz") for p in (tmp_path / "data").glob("image-folders/*.npz")] == [True]

    # The very same images, not just as many, wherever a run's dataset is loaded again; loaded
    # without the run's options, it would be another split.
    model = load_model(run, "best", "cpu")
    assert len(load_dataset(str(pets), tmp_path / "data").test) == 5 != len(carved.test)
    for again in (load_evaluation_dataset(model, None, quiet=True), dataset_on_this_machine(model)):
        assert np.array_equal(again.test.images, carved.test.images) and np.array_equal(again.test.labels, carved.test.labels)

    config["config"]["epochs"] = 2  # resume continues a run to the epochs its config.json says
    (run / "config.json").write_text(json.dumps(config))
    result = cifar100_cli("train", "--resume", run, "--no-evaluate", "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "metrics.json").read_text())["test"]["images"] == 7
    assert len((run / "history.csv").read_text().splitlines()) == 3
