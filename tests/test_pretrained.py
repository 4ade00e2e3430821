"""The CIFAR-100 model that ships inside the package: it loads, is the file its config.json
and model card name, reproduces its recorded test accuracy on the real test set, and works on
a photo straight away through `predict --pretrained`, `serve --pretrained` and the API."""

from __future__ import annotations

import hashlib
import json

import httpx
import numpy as np
import pytest
from PIL import Image

import cifar100
from cifar100.data.sources import load_dataset
from cifar100.evaluation.metrics import topk_accuracy
from cifar100.model_files import pretrained_folder
from run_fixtures import run_cli, serve_process

FOLDER = pretrained_folder()
CONFIG = json.loads((FOLDER / "config.json").read_text())


def test_the_shipped_file_is_the_one_its_config_and_card_record():
    data = (FOLDER / "model.safetensors").read_bytes()
    assert hashlib.sha256(data).hexdigest() == CONFIG["weights"]["sha256"]
    assert len(data) == CONFIG["weights"]["bytes"] < 8_000_000  # a few MB, not a checkpoint
    card = (FOLDER / "README.md").read_text()
    assert CONFIG["weights"]["sha256"] in card
    source = CONFIG["source"]
    assert source["preset"] == "cpu" and source["command"].startswith("cifar100 train")
    assert source["seed"] is not None and source["commit"]
    assert len(CONFIG["classes"]) == 100 and len(CONFIG["coarse_classes"]) == 20


def test_it_reproduces_its_recorded_test_accuracy(cifar100_data_dir):
    model = cifar100.load_pretrained()
    test = load_dataset("cifar100", cifar100_data_dir, download=False, quiet=True).test
    scores = model.model.logits(test.images).numpy()
    recorded = CONFIG["test"]
    assert recorded["images"] == len(test) == 10_000
    # The same weights on the same images: equal up to float summation order on another CPU.
    assert topk_accuracy(scores, test.labels, 1) == pytest.approx(recorded["top1"], abs=1e-3)
    assert topk_accuracy(scores, test.labels, 5) == pytest.approx(recorded["top5"], abs=1e-3)
    assert recorded["top1"] > 0.6


def photo(path, rgb=(230, 120, 20), size=(640, 480)):
    """A synthetic 'photo': an orange disc on a green background, larger than 32x32."""
    image = Image.new("RGB", size, (40, 140, 60))
    from PIL import ImageDraw

    ImageDraw.Draw(image).ellipse((170, 90, 470, 390), fill=rgb)
    image.save(path, quality=90)
    return path


def test_predict_pretrained_on_a_photo(tmp_path):
    result = run_cli("predict", "--pretrained", photo(tmp_path / "orange.jpg"), "--json")
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)["images"]
    assert len(record["top_k"]) == 5
    assert {entry["class"] for entry in record["top_k"]} <= set(CONFIG["classes"])
    assert sum(entry["probability"] for entry in record["top_k"]) <= 1 + 1e-6

    result = run_cli("predict", "--pretrained")
    assert result.returncode == 2 and "the following arguments are required: PATH" in result.stderr


def test_predict_pretrained_knows_real_photos(cifar100_data_dir, tmp_path):
    """Real CIFAR-100 test images, enlarged 4x as a photo would be larger, in folders named after
    their class: most come back with their own class in the top 5 (the model's top-5 is 91%)."""
    test = load_dataset("cifar100", cifar100_data_dir, download=False, quiet=True).test
    classes = CONFIG["classes"]
    for i in range(20):
        folder = tmp_path / classes[test.labels[i]]
        folder.mkdir(exist_ok=True)
        Image.fromarray(test.images[i]).resize((128, 128), Image.Resampling.BICUBIC).save(folder / f"{i}.png")
    result = run_cli("predict", "--pretrained", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)["images"]
    assert len(records) == 20 and all(r["label"] in classes for r in records)
    assert sum(1 for r in records if r["label_rank"] is not None and r["label_rank"] <= 5) >= 16


def test_load_pretrained_predicts_arrays_and_files(tmp_path):
    model = cifar100.load_pretrained()
    assert len(model.classes) == 100 and "test top-1" in repr(model)
    image = np.asarray(Image.open(photo(tmp_path / "orange.jpg")))
    from_array, from_file = model.predict([image, tmp_path / "orange.jpg"], top_k=3)
    assert len(from_array["top_k"]) == 3
    assert [name for name, _ in from_array["top_k"]] == [name for name, _ in from_file["top_k"]]


def test_serve_pretrained_answers_with_cifar100_classes(tmp_path):
    with serve_process("--pretrained") as (base, _, _):
        assert len(httpx.get(f"{base}/classes", timeout=30).json()["classes"]) == 100
        with open(photo(tmp_path / "orange.jpg"), "rb") as f:
            answer = httpx.post(f"{base}/predict", files={"file": ("orange.jpg", f, "image/jpeg")}, timeout=60)
    assert answer.status_code == 200, answer.text
