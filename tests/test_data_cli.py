"""`cifar100 data download` and `cifar100 data stats`, run as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
        (["--val-size", "-1"], "--val-size must be 0 or more"),
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
