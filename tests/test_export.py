"""`cifar100 export`: ONNX and TorchScript files that give PyTorch's answers on real images,
with the normalisation inside and a sidecar that says how to feed them."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cifar100.data.sources import load_dataset
from cifar100.app.export import check_parity, onnx_probabilities, torchscript_probabilities
from cifar100.inference import load_model
from run_fixtures import run_cli


@pytest.fixture(scope="module")
def run_copy(smoke_run, tmp_path_factory):
    """A private copy of the smoke run: export writes into the run folder."""
    target = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(smoke_run, target)
    return target


@pytest.fixture(scope="module")
def model(run_copy):
    return load_model(run_copy)


@pytest.fixture(scope="module")
def real_test_images(run_copy):
    """The run's own real CIFAR-10 test JPEGs, decoded by the dataset reader."""
    config = json.loads((run_copy / "config.json").read_text())
    dataset = load_dataset(config["dataset"]["spec"], config["dataset"]["data_dir"], download=False, quiet=True)
    return dataset.test.images


@pytest.fixture(scope="module")
def onnx_export(run_copy):
    result = run_cli("export", run_copy, "--format", "onnx")
    assert result.returncode == 0, result.stderr
    return run_copy / "export" / "model.onnx", result.stdout


def test_onnx_export_gives_pytorch_answers_on_real_images(onnx_export, model, real_test_images):
    path, stdout = onnx_export
    # The command checked itself on real test images of the run's dataset, and said so.
    assert "same top-1 class on 256/256 images (the first 256 test images of" in stdout

    # And an independent check here, on all of them, through the raw onnxruntime API.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [inp], [out] = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("image", "logits")
    assert inp.type == "tensor(float)" and inp.shape[1:] == [3, 32, 32] and isinstance(inp.shape[0], str)
    x = real_test_images.transpose(0, 3, 1, 2).astype(np.float32) / 255  # the documented input
    logits = np.concatenate([session.run(None, {"image": x[i : i + 100]})[0] for i in range(0, len(x), 100)])
    reference = model.logits(real_test_images).numpy()
    assert logits.shape == reference.shape == (len(x), len(model.classes))
    assert (logits.argmax(1) == reference.argmax(1)).all()
    assert np.abs(logits - reference).max() < 1e-3
    # A batch of one and an odd batch work too (the batch axis is dynamic).
    for n in (1, 7):
        assert session.run(None, {"image": x[:n]})[0].shape == (n, len(model.classes))


def test_onnx_sidecar_and_metadata_describe_the_input(onnx_export, model):
    path, _ = onnx_export
    sidecar = json.loads(path.with_name("model.onnx.json").read_text())
    assert sidecar["format"] == "onnx" and sidecar["file"] == "model.onnx"
    assert sidecar["classes"] == model.classes
    assert sidecar["input"]["name"] == "image" and sidecar["input"]["layout"] == "NCHW"
    assert sidecar["input"]["size"] == [32, 32] and sidecar["input"]["dtype"] == "float32"
    assert "0..1" in sidecar["input"]["scale"]
    assert sidecar["normalization"] == {"mean": pytest.approx(model.mean), "std": pytest.approx(model.std), "built_in": True}
    parity = sidecar["parity"]
    assert parity["runtime"] == "onnxruntime" and parity["images"] == parity["top1_agreement"] == 256
    assert parity["max_probability_difference"] < 1e-4
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["cifar100.classes"]) == model.classes


def test_normalisation_and_temperature_are_inside_the_exported_model(onnx_export, model):
    # Feeding raw 0..1 pixels must give the network's logits on normalised pixels, divided by
    # the temperature fitted on the run's validation split.
    path, _ = onnx_export
    sidecar = json.loads(path.with_name("model.onnx.json").read_text())
    assert sidecar["calibration"] == {"temperature": pytest.approx(model.temperature), "built_in": True}
    assert model.temperature != 1.0  # the smoke run has a validation split, so it was fitted
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(model.classifier.net((x - mean) / std) / model.temperature, 1).numpy()
    assert np.abs(onnx_probabilities(path, images) - expected).max() < 1e-5


def test_torchscript_export_gives_pytorch_answers(run_copy, model, real_test_images, tmp_path):
    out = tmp_path / "classifier.pt"
    (tmp_path / "no-images").mkdir()
    (tmp_path / "no-images" / "broken.jpg").write_bytes(b"not a jpeg")
    result = run_cli("export", run_copy, "--format", "torchscript", "--out", out,
                     "--check-images", tmp_path / "no-images")
    assert result.returncode == 2 and "no readable images" in result.stderr and not out.exists()

    config = json.loads((run_copy / "config.json").read_text())
    result = run_cli("export", run_copy, "--format", "torchscript", "--out", out,
                     "--check-images", config["dataset"]["spec"])
    assert result.returncode == 0, result.stderr
    assert "same top-1 class on 256/256 images" in result.stdout
    probs = torchscript_probabilities(out, real_test_images)
    reference = model.probabilities(real_test_images)
    assert (probs.argmax(1) == reference.argmax(1)).all() and np.abs(probs - reference).max() < 1e-5
    # The description also travels inside the file.
    with zipfile.ZipFile(out) as archive:
        inner = [n for n in archive.namelist() if n.endswith("extra/cifar100.json")]
        assert json.loads(archive.read(inner[0]))["classes"] == model.classes
    assert json.loads(out.with_name("classifier.pt.json").read_text())["format"] == "torchscript"


def test_parity_check_catches_a_disagreeing_model(model, real_test_images):
    images = real_test_images[:50]
    honest = model.probabilities(images).astype(np.float64)
    assert check_parity(model, honest, images, "test").passed
    swapped = honest[:, ::-1].copy()  # a model whose outputs are in the wrong class order
    report = check_parity(model, swapped, images, "test")
    assert not report.passed and report.top1_agreement < 50 and report.max_probability_difference > 0.01


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint at all")
    result = run_cli("export", broken)
    assert result.returncode == 2 and "cifar100: error:" in result.stderr and "broken.pt" in result.stderr
    assert not (tmp_path / "broken.onnx").exists()
