"""Weights to share: `cifar100 export --format safetensors` writes a folder that predict, serve,
export and the API load, from disk or from a URL, verified by sha256."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import httpx
import pytest
import torch

import cifar100
from cifar100.errors import CheckpointError, DownloadError
from cifar100.inference import load_model
from run_fixtures import run_cli, serve_process


@pytest.fixture(scope="module")
def weights(synthetic_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("weights") / "synthetic-weights"
    result = run_cli("export", synthetic_run, "--format", "safetensors", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "model.safetensors" in result.stdout and "test top-1" in result.stdout
    return out


def test_export_writes_weights_config_and_card_that_agree(weights, synthetic_run):
    assert sorted(p.name for p in weights.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((weights / "config.json").read_text())
    data = (weights / "model.safetensors").read_bytes()
    assert config["weights"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert config["weights"]["bytes"] == len(data) and config["weights"]["dtype"] == "float32"
    assert config["classes"] == ["blue", "green", "red", "stripes"]
    assert config["model"]["arch"] == "stagenet" and config["model"]["kwargs"]["num_classes"] == 4
    assert "data_dir" not in config["dataset"]  # a path on this machine means nothing elsewhere
    assert config["source"]["preset"] == "smoke" and config["source"]["command"].startswith("cifar100 train")
    # The stored float32 weights are the checkpoint's: their test accuracy is the evaluation's.
    run_metrics = json.loads((synthetic_run / "metrics.json").read_text())
    assert config["test"]["top1"] == pytest.approx(run_metrics["test"]["top1"], abs=1e-9)
    assert config["test"]["images"] == run_metrics["test"]["images"]
    card = (weights / "README.md").read_text()
    assert config["weights"]["sha256"] in card and f"{config['test']['top1']:.2%}" in card


def test_the_weights_folder_predicts_exactly_as_the_run(weights, synthetic_run, synthetic_folder):
    images = synthetic_folder / "test" / "red"
    from_run = json.loads(run_cli("predict", synthetic_run, images, "--json").stdout)
    from_weights = json.loads(run_cli("predict", weights, images, "--json").stdout)
    assert [r["top_k"] for r in from_run["images"]] == [r["top_k"] for r in from_weights["images"]]


def test_float16_weights_are_half_the_size_and_measured(synthetic_run, weights, tmp_path):
    out = tmp_path / "half"
    result = run_cli("export", synthetic_run, "--format", "safetensors", "--dtype", "float16", "--out", out)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["weights"]["dtype"] == "float16"
    assert (out / "model.safetensors").stat().st_size < 0.6 * (weights / "model.safetensors").stat().st_size
    assert 0 <= config["test"]["top1"] <= 1
    # Read back as float32, whatever they were stored as.
    state = load_model(out).classifier.state_dict()
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}


def test_export_never_overwrites_a_folder_of_other_files(synthetic_run, tmp_path):
    config_before = (synthetic_run / "config.json").read_bytes()
    result = run_cli("export", synthetic_run, "--format", "safetensors", "--out", synthetic_run)
    assert result.returncode == 2 and "already holds other files" in result.stderr
    assert (synthetic_run / "config.json").read_bytes() == config_before
    assert not (synthetic_run / "model.safetensors").exists()


def test_options_may_sit_between_the_model_and_the_images(weights, synthetic_folder):
    images = synthetic_folder / "test" / "red"
    result = run_cli("predict", weights, "--top-k", "2", images, "--json")
    assert result.returncode == 0, result.stderr
    assert all(len(record["top_k"]) == 2 for record in json.loads(result.stdout)["images"])


def test_a_damaged_or_unexpected_weights_file_is_refused(weights, tmp_path, synthetic_folder):
    damaged = tmp_path / "damaged"
    shutil.copytree(weights, damaged)
    data = bytearray((damaged / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (damaged / "model.safetensors").write_bytes(bytes(data))
    result = run_cli("predict", damaged, synthetic_folder / "test" / "red")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "damaged or does not belong to this config" in result.stderr

    result = run_cli("predict", weights, synthetic_folder / "test" / "red", "--sha256", "0" * 64)
    assert result.returncode != 0 and "not the expected" in result.stderr


def test_weights_load_from_a_url_pinned_by_sha256_and_then_offline(weights, http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR100_DATA", str(tmp_path))  # where a URL's folder is cached
    for name in ("config.json", "model.safetensors"):
        http_server.files[f"models/synthetic/{name}"] = (weights / name).read_bytes()
    sha256 = json.loads((weights / "config.json").read_text())["weights"]["sha256"]
    url = http_server.url("models/synthetic/")

    with pytest.raises(DownloadError, match="nothing was downloaded"):
        cifar100.load_model(url, sha256="f" * 64)
    assert not any(path.endswith("model.safetensors") for path, _ in http_server.requests)

    model = cifar100.load_model(url, sha256=sha256)
    assert model.classes == ["blue", "green", "red", "stripes"]
    assert any(path.endswith("model.safetensors") for path, _ in http_server.requests)
    fetched = len(http_server.requests)

    # A second load verifies the cached copy instead of downloading the weights again, and
    # works with the server gone.
    cifar100.load_model(url, sha256=sha256)
    assert not any(path.endswith("model.safetensors") for path, _ in http_server.requests[fetched:])
    http_server.stop()
    assert cifar100.load_model(url, sha256=sha256).classes == model.classes


def test_a_failed_update_keeps_the_cached_weights(weights, http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR100_DATA", str(tmp_path))
    for name in ("config.json", "model.safetensors"):
        http_server.files[f"m/{name}"] = (weights / name).read_bytes()
    url = http_server.url("m/")
    first = cifar100.load_model(url)  # unpinned: whatever the folder holds now
    # The folder moves on to new weights, whose download then breaks off every time.
    config = json.loads((weights / "config.json").read_text())
    config["weights"] = {**config["weights"], "sha256": "a" * 64, "bytes": 10}
    http_server.files["m/config.json"] = json.dumps(config).encode()
    http_server.files["m/model.safetensors"] = b"0123456789"
    http_server.truncate["m/model.safetensors"] = (3, 100)
    with pytest.raises(DownloadError):
        cifar100.load_model(url)
    # The earlier, verified weights are still in the cache and load, pinned, without the server.
    http_server.stop()
    pinned = json.loads((weights / "config.json").read_text())["weights"]["sha256"]
    assert cifar100.load_model(url, sha256=pinned).classes == first.classes


def test_predict_and_export_take_a_url(weights, http_server, tmp_path, synthetic_folder):
    for name in ("config.json", "model.safetensors"):
        http_server.files[f"w/{name}"] = (weights / name).read_bytes()
    env = {**os.environ, "CIFAR100_DATA": str(tmp_path / "cache")}
    result = run_cli("predict", http_server.url("w/model.safetensors"), synthetic_folder / "test" / "blue", env=env)
    assert result.returncode == 0, result.stderr
    assert "PASSED" in result.stdout
    result = run_cli("export", http_server.url("w/"), "--format", "onnx", "--out", tmp_path / "m.onnx", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.onnx").is_file()


def test_serve_takes_a_weights_folder(weights):
    with serve_process(weights) as (base, _, _):
        classes = httpx.get(f"{base}/classes", timeout=30).json()
    assert classes["classes"] == ["blue", "green", "red", "stripes"]


def test_not_a_weights_folder_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a cifar100 weights config"):
        load_model(tmp_path)


def test_evaluating_a_weights_folder_writes_into_the_current_folder(weights, tmp_path):
    before = sorted(p.name for p in weights.iterdir())
    env = {**os.environ, "CIFAR100_DATA": str(tmp_path / "cache")}
    result = run_cli("evaluate", weights, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"{weights.name}-evaluation" / "metrics.json").is_file()
    assert sorted(p.name for p in weights.iterdir()) == before  # the shared folder stays as it was


def test_concurrent_fetches_download_the_weights_once(weights, http_server, tmp_path):
    # As torchrun's processes would, each reading the same --init-from URL.
    from concurrent.futures import ThreadPoolExecutor

    from cifar100.weights import fetch_weights_folder

    for name in ("config.json", "model.safetensors"):
        http_server.files[f"c/{name}"] = (weights / name).read_bytes()
    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(lambda _: fetch_weights_folder(http_server.url("c/"), tmp_path, quiet=True), range(4)))
    assert len(set(folders)) == 1
    assert sum(path.endswith("model.safetensors") for path, _ in http_server.requests) == 1


def test_a_server_sending_more_than_the_declared_bytes_is_cut_off(weights, http_server, tmp_path):
    from cifar100.weights import fetch_weights_folder

    http_server.files["big/config.json"] = (weights / "config.json").read_bytes()
    http_server.files["big/model.safetensors"] = (weights / "model.safetensors").read_bytes() * 3
    with pytest.raises(DownloadError, match="sent more than the"):
        fetch_weights_folder(http_server.url("big/"), tmp_path, quiet=True)
    assert not list(tmp_path.rglob("model.safetensors*"))
