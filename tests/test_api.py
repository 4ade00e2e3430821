"""The Python API as a notebook user meets it: `cifar100.train(...)` returns a Run whose history
has Keras's shape, whose figures are matplotlib Figures (no pyplot state, no backend switch),
and whose settings are checked exactly as the command line checks them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import cifar100
from cifar100.errors import ConfigError, ImageError
from run_fixtures import run_cli


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, synthetic_folder):
    work = tmp_path_factory.mktemp("api")
    run = cifar100.train(str(synthetic_folder), "smoke", epochs=3, data_dir=work / "cache", out=work / "run",
                         quiet=True, device="cpu")
    return run, synthetic_folder


def test_train_returns_a_run_with_a_keras_shaped_history(api_run):
    run, _ = api_run
    history = run.history
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(history)
    assert len(history["loss"]) == len(history["val_accuracy"]) == 3 and history["epoch"] == [1, 2, 3]
    assert 0 <= min(history["val_accuracy"]) <= max(history["val_accuracy"]) <= 1
    assert run.best_epoch == int(np.argmax(history["val_accuracy"])) + 1
    assert run.metrics["test"]["top1"] > 0.8  # chance is 0.25
    assert (run.path / "report.html").is_file() and (run.path / "checkpoints" / "best.pt").is_file()
    config = json.loads((run.path / "config.json").read_text())
    assert config["preset"] == "smoke" and config["config"]["epochs"] == 3
    assert config["command"].startswith("cifar100.train(") and "epochs=3" in config["command"]
    assert "test top-1" in repr(run) and "3/3 epochs" in repr(run)
    again = cifar100.load_run(run.path)
    assert again.history == history and again.metrics == run.metrics


def test_the_figures_are_matplotlib_figures(api_run):
    run, _ = api_run
    history = run.plot_history()
    assert isinstance(history, Figure)
    accuracy, loss, lr = history.axes
    labels = [line.get_label() for line in accuracy.lines]
    assert "train" in labels and "validation" in labels
    assert len(lr.lines[0].get_xdata()) == 3
    for figure in (run.show_predictions(8, seed=1), run.confusion_matrix(), run.gradcam(4)):
        assert isinstance(figure, Figure) and figure.axes
    with pytest.raises(ConfigError, match="n must be between 1 and 32"):
        run.show_predictions(0)


def test_predict_takes_paths_pil_images_and_arrays(api_run):
    run, folder = api_run
    path = sorted((folder / "test" / "red").iterdir())[0]
    image = Image.open(path).convert("RGB")
    results = run.predict([path, image, np.asarray(image)], top_k=3)
    assert [r["image"] for r in results] == [str(path), "PIL image", "array"]
    for r in results:
        assert len(r["top_k"]) == 3 and r["top_k"][0][0] in run.model.classes
        probs = [p for _, p in r["top_k"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert results[0]["top_k"] == results[1]["top_k"] == results[2]["top_k"]  # the same pixels
    whole_folder = run.predict(folder / "test" / "red")
    assert len(whole_folder) == len(list((folder / "test" / "red").iterdir()))
    with pytest.raises(ImageError, match="does not exist"):
        run.predict(folder / "nothing.jpg")
    with pytest.raises(ImageError, match="uint8"):
        run.predict(np.zeros((32, 32), dtype=np.float32))


@pytest.mark.parametrize("settings, message", [
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"lrr": 0.1}, "unknown setting 'lrr'"),
    ({"optimizer": "adamm"}, "optimizer"),
    ({"epochs": 2.5}, "not a valid int"),
])
def test_bad_settings_raise_what_the_command_line_prints(tmp_path, synthetic_folder, settings, message):
    with pytest.raises(ConfigError, match=message) as raised:
        cifar100.train(str(synthetic_folder), "smoke", out=tmp_path / "run", quiet=True, **settings)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    if settings != {"epochs": 2.5}:  # argparse itself refuses --epochs 2.5
        (name, value), = settings.items()
        flag = ["--set", f"{name}={value}"] if name in ("lrr", "optimizer") else [f"--{name}", str(value)]
        result = run_cli("train", "--preset", "smoke", "--dataset", synthetic_folder, "--out", tmp_path / "cli", *flag)
        assert result.returncode == 2 and str(raised.value) in result.stderr


def test_importing_and_plotting_leave_matplotlib_as_the_user_set_it(tmp_path):
    """A notebook's backend (here: svg, set by the user) survives `import cifar100` and every
    figure the tool draws; pyplot holds no figure afterwards."""
    code = """
import matplotlib
matplotlib.use("svg")
import cifar100
from cifar100.evaluation import plots
history = {"epoch": [1, 2], "train_acc": [0.1, 0.2], "val_acc": [0.1, 0.3], "train_loss": [2, 1],
           "val_loss": [2, 1.5], "lr": [0.1, 0.05]}
fig = plots.plot_history(history, best_epoch=2)
plots.plot_history(history, "%s", best_epoch=2)
import matplotlib.pyplot as plt
print(matplotlib.get_backend(), isinstance(fig, matplotlib.figure.Figure), plt.get_fignums())
""" % (tmp_path / "h.png")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "True", "[]"]
    assert (tmp_path / "h.png").stat().st_size > 1000
