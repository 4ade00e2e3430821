"""The Python API, for notebooks and scripts. It calls the functions the command line calls:
`cifar100.train(...)` is `cifar100 train`, with the same settings, checks, run folder and
checkpoints; a `Run` reads that folder.

    import cifar100
    run = cifar100.train(preset="cpu", epochs=4)     # a progress bar, then a Run
    run.history["val_accuracy"]                     # Keras-shaped history
    run.plot_history()                              # a matplotlib Figure, shown inline
    run.show_predictions(16)                        # random test images, PASSED/FAILED
    run.predict("photo.jpg")                        # top-5 classes, calibrated
    cifar100.load_pretrained().predict("photo.jpg") # the CIFAR-100 model shipped with the package
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cifar100.data.types import DEFAULT_CENTER_CROP, DEFAULT_SPLIT_SEED, DEFAULT_TEST_SIZE
from cifar100.errors import ConfigError, ImageError
from cifar100.runs import RunFolder, best_epoch

# Keras's History names for the history.csv columns.
KERAS_NAMES = {"train_loss": "loss", "train_acc": "accuracy", "val_loss": "val_loss", "val_acc": "val_accuracy",
               "lr": "lr", "epoch": "epoch", "seconds": "seconds"}


def train(
    dataset: str = "cifar100",
    preset: str | None = None,
    *,
    out: str | Path | None = None,
    name: str | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    evaluate: bool = True,
    tta: bool = False,
    quiet: bool = False,
    tensorboard: bool = False,
    **settings: Any,
) -> "Run":
    """Train a model as `cifar100 train` does and return its Run.

    dataset: "cifar100" (default), "cifar10", or an image folder. preset: a name from
    `cifar100 presets` (default: fast on a GPU, cpu otherwise). settings: any preset field
    or a command-line setting by its flag's name (epochs=, lr=, val_size=0.1 (a fraction) or
    5000 (a count), test_size= (a <class>/<image> folder's test split), model_ema=,
    label_smoothing=, init_from=, ...), checked exactly as the command line checks them. evaluate:
    finish with the full evaluation (metrics, figures, report.html), with TTA rows if `tta`.
    tensorboard: also log to <run>/tensorboard/ (`%tensorboard --logdir runs` shows it)."""
    from cifar100.training.trainer import configure_run, train as train_run

    if tta and not evaluate:
        raise ConfigError("tta=True is part of the final evaluation, which evaluate=False skips; drop one of them")
    log = None
    if tensorboard:
        from cifar100.evaluation.tensorboard import TensorBoardLog

        log = TensorBoardLog()
    preset, cfg = configure_run(preset, settings, device)
    shown = ", ".join([repr(dataset), f"preset={preset!r}", *(f"{k}={v!r}" for k, v in settings.items())])
    result = train_run(cfg, dataset, preset=preset, data_dir=None if data_dir is None else str(data_dir), out=out,
                       name=name, device=device, quiet=quiet, command=f"cifar100.train({shown})",
                       test_best=not evaluate, on_epoch=log.on_epoch if log else None)
    run = Run(result.run_dir)
    if evaluate and result.is_main:
        run.evaluate(tta=tta, device=result.device, quiet=quiet, _dataset=result.dataset)
    if log and result.is_main:
        log.add_run_results(result.run_dir, result.best_epoch)
        log.close()
    return run


def load_dataset(dataset: str = "cifar100", data_dir: str | Path | None = None, *,
                 test_size: float = DEFAULT_TEST_SIZE, split_seed: int = DEFAULT_SPLIT_SEED,
                 center_crop: bool = DEFAULT_CENTER_CROP):
    """A dataset as training sees it: `.train` and `.test` splits of uint8 (N, 32, 32, 3)
    images with int64 labels, `.val` when an image folder has its own val/, `.classes` (and
    `.coarse_classes` for CIFAR-100). Downloaded and verified on first use, as `cifar100 data
    download` does. An image folder of <class>/<image> gets its test split carved as `train`
    carves it (test_size, split_seed); center_crop=False squashes photos instead of cropping."""
    from cifar100.data.sources import load_dataset as load

    return load(dataset, data_dir, test_size=test_size, split_seed=split_seed, center_crop=center_crop)


def class_distribution(dataset) -> Any:
    """A Figure of the images per class in each split of a dataset from `load_dataset`."""
    from cifar100.evaluation import plots

    splits = (("train", dataset.train), ("val", dataset.val), ("test", dataset.test))
    counts = {name: np.bincount(split.labels, minlength=len(dataset.classes))
              for name, split in splits if split is not None}
    return plots.plot_class_distribution(dataset.classes, counts, title=f"Images per class in {dataset.name}")


def load_run(path: str | Path) -> "Run":
    """The run in a run folder (finished or interrupted), as `train` returns it."""
    folder = RunFolder(Path(path))
    if not folder.root.is_dir() or (folder.read_config() is None and not folder.last.exists()):
        raise ConfigError(f"{path} is not a run folder: it has neither config.json nor checkpoints/last.pt")
    return Run(folder.root)


def load_model(source: str | Path, *, sha256: str | None = None, which: str = "best") -> "Model":
    """A trained model for predictions: a run folder (its best.pt), a checkpoint file, a weights
    folder (`export(format="safetensors")`) or an http(s) URL to one; `sha256` pins the weights
    file (checked before use, and for a URL before the download)."""
    from cifar100.inference import load_model as load

    return Model(load(source, which, "cpu", sha256=sha256), str(source))


def load_pretrained() -> "Model":
    """The CIFAR-100 model that ships with the package (trained by the cpu preset; its
    README.md beside the weights says how, and its test accuracy)."""
    from cifar100.model_files import PRETRAINED

    return load_model(PRETRAINED)


class _Predicts:
    """`predict` for whatever holds a trained model as `self.model` (an inference.LoadedModel):
    a `Model`, and a `Run` (its best.pt)."""

    model: Any

    def predict(self, images: Any, top_k: int = 5, crop: bool | None = None) -> list[dict[str, Any]]:
        """Top-k classes with calibrated probabilities for each image: a path (a file or a folder
        of them), a PIL image, a uint8 array (H, W, 3), or a list of these. Photos are
        prepared as `cifar100 predict` prepares them: 32x32, centre-cropped unless crop=False (the
        default follows the model's training images: squashed for center_crop=false)."""
        from PIL import Image

        from cifar100.data.images import to_model_input

        model = self.model
        if crop is None:
            crop = model.center_crop
        items = images if isinstance(images, (list, tuple)) else [images]
        inputs, names = [], []
        for item in items:
            for name, image in _images_of(item, Image):
                inputs.append(to_model_input(image, size=32, crop=crop))
                names.append(name)
        if not inputs:
            raise ImageError("no images to predict")
        probabilities = model.probabilities(np.stack(inputs))
        k = min(top_k, len(model.classes))
        results = []
        for name, probs in zip(names, probabilities):
            order = np.argsort(-probs, kind="stable")[:k]
            results.append({"image": name, "top_k": [(model.classes[i], float(probs[i])) for i in order]})
        return results


class Model(_Predicts):
    """A trained model ready for predictions on your images."""

    def __init__(self, loaded, source: str):
        self.model = loaded  # inference.LoadedModel: the classifier, classes, normalisation
        self.source = source

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes)

    @property
    def info(self) -> dict[str, Any]:
        """A weights folder's config.json (provenance, recorded test metrics); else the
        checkpoint's model, epoch and validation metrics."""
        if self.model.weights_config is not None:
            return dict(self.model.weights_config)
        return {"model": self.model.model_config, "epoch": self.model.epoch, "metrics": self.model.metrics}

    def __repr__(self) -> str:
        test = (self.model.weights_config or {}).get("test") or {}
        accuracy = f", test top-1 {test['top1']:.2%}" if test.get("top1") is not None else ""
        return f"Model({self.source!r}: {self.model.model_config.get('arch')}, {len(self.classes)} classes{accuracy})"

    def export(self, format: str = "onnx", out: str | Path | None = None, dtype: str = "float32") -> Path:
        """Export as `cifar100 export` does (onnx, torchscript or safetensors); returns the path."""
        from cifar100.app.export import export_run

        return export_run(self.source, format, out, dtype=dtype).path


def _images_of(item: Any, Image) -> Iterable[tuple[str, Any]]:
    from cifar100.app.predict import find_images
    from cifar100.data.images import decode_image

    if isinstance(item, (str, Path)):
        files, missing = find_images([item])
        if missing:
            raise ImageError(f"{item} does not exist")
        for path in files:
            yield str(path), decode_image(path)
    elif isinstance(item, Image.Image):
        yield "PIL image", item.convert("RGB")
    elif isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[-1] != 3:
            raise ImageError(f"an image array must be uint8 (H, W, 3) RGB, got {item.dtype} {item.shape}")
        yield "array", Image.fromarray(item, "RGB")
    else:
        raise ImageError(f"cannot read an image from a {type(item).__name__}: give a path, a PIL image or an array")


class Run(_Predicts):
    """A run folder: its history, numbers and figures, and its model for predictions. Every
    figure method returns a matplotlib Figure (a notebook shows it inline; `fig.savefig(...)`
    writes it)."""

    def __init__(self, path: str | Path):
        self.folder = RunFolder(Path(path))
        self._test = None  # (model, dataset, test metrics), made by the first figure that needs them

    @property
    def path(self) -> Path:
        return self.folder.root

    def __repr__(self) -> str:
        config = self.config
        rows = self.folder.read_history()
        test = (self.metrics.get("test") or {}).get("top1")
        parts = [f"{config.get('preset', '?')} on {(config.get('dataset') or {}).get('name', '?')}",
                 f"{len(rows)}/{(config.get('config') or {}).get('epochs', '?')} epochs"]
        if test is not None:
            parts.append(f"test top-1 {test:.2%}")
        return f"Run({str(self.path)!r}: {', '.join(parts)})"

    # -- what the folder holds -------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        return self.folder.read_config() or {}

    @property
    def metrics(self) -> dict[str, Any]:
        """metrics.json: the last evaluation ({} before there is one)."""
        return self.folder.read_metrics()

    @property
    def history(self) -> dict[str, list[float]]:
        """Per epoch, under Keras's names: loss, accuracy, val_loss, val_accuracy, lr (and
        epoch, seconds). Without a validation split the val_ lists hold NaN."""
        rows = self.folder.read_history()
        return {keras: [row[column] for row in rows] for column, keras in KERAS_NAMES.items()}

    @property
    def best_epoch(self) -> int | None:
        return best_epoch(self.folder.read_history())

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(self, tta: bool = False, *, data_dir: str | None = None, device: Any = "auto",
                 quiet: bool = False, _dataset=None) -> dict[str, Any]:
        """Evaluate best.pt as `cifar100 evaluate` does (metrics.json, plots/, report.html)
        and return the metrics."""
        from cifar100.devices import resolve_device
        from cifar100.evaluation.evaluate import evaluate_run

        device = resolve_device(device) if isinstance(device, str) else device
        self._test = None
        return evaluate_run(self.path, tta=tta, data_dir=data_dir, device=device, quiet=quiet, dataset=_dataset)

    def _evaluation(self):
        """(model, dataset, test metrics) of best.pt, computed once for the figure methods."""
        if self._test is None:
            self._test = self._evaluate_test()
        return self._test

    def _evaluate_test(self):
        from cifar100.evaluation.evaluate import check_same_classes, load_evaluation_dataset, split_fine_to_coarse
        from cifar100.evaluation.metrics import split_metrics

        model = self.model
        dataset = load_evaluation_dataset(model, None, quiet=True)
        check_same_classes(model, dataset)
        fine_to_coarse, coarse = split_fine_to_coarse(model, dataset)
        test = split_metrics(model.logits(dataset.test.images).numpy(), dataset.test.labels, fine_to_coarse,
                             len(coarse) if coarse else None)
        return model, dataset, test

    @functools.cached_property
    def model(self):
        """best.pt (else last.pt) ready for inference: a `LoadedModel` on the CPU."""
        from cifar100.inference import load_model

        return load_model(self.path, "best", "cpu")

    # -- predictions on the user's images ----------------------------------------------------

    def export(self, format: str = "onnx", out: str | Path | None = None, dtype: str = "float32") -> Path:
        """Export best.pt as `cifar100 export` does: ONNX or TorchScript (checked against
        PyTorch before it is written), or the weights folder to share (format="safetensors");
        returns the model file's (or folder's) path."""
        from cifar100.app.export import export_run

        return export_run(self.path, format, out, dtype=dtype).path

    # -- figures -----------------------------------------------------------------------------

    def plot_history(self):
        """Accuracy, loss and learning rate per epoch, the best epoch marked."""
        from cifar100.evaluation import plots
        from cifar100.runs import history_columns

        rows = self.folder.read_history()
        if not rows:
            raise ConfigError(f"{self.path} has not finished an epoch yet: there is no history to plot")
        return plots.plot_history(history_columns(rows), best_epoch=best_epoch(rows), title=f"Training history: {self.path.name}")

    def show_predictions(self, n: int = 16, seed: int | None = None):
        """`n` random test images (a new draw each call unless `seed` is given), each marked
        PASSED or FAILED with the predicted class and its probability."""
        from cifar100.evaluation import plots

        model, dataset, test = self._evaluation()
        rows, cols = plots.EVAL_GALLERY_GRID
        if not 1 <= n <= rows * cols:
            raise ConfigError(f"n must be between 1 and {rows * cols}, got {n}")
        pick = np.random.default_rng(seed).choice(len(dataset.test), size=min(n, len(dataset.test)), replace=False)
        return plots.plot_prediction_gallery(
            dataset.test.images[pick], [model.classes[i] for i in test.labels[pick]],
            [model.classes[i] for i in test.predictions[pick]], test.confidences[pick],
            title=f"{len(pick)} random test images" + ("" if seed is None else f" (seed {seed})"))

    def confusion_matrix(self):
        """The test confusion matrix, rows normalised, classes grouped by superclass for CIFAR-100."""
        from cifar100.evaluation import plots
        from cifar100.evaluation.evaluate import confusion_layout

        model, dataset, test = self._evaluation()
        order, groups, ordering = confusion_layout(model, dataset, test)
        return plots.plot_confusion_matrix(test.confusion, model.classes, order=order, groups=groups,
                                           title=f"Confusion matrix (test, {ordering})")

    def gradcam(self, n: int = 8, seed: int | None = 0):
        """Grad-CAM on `n` test images: where the network looked for the class it predicted."""
        from cifar100.evaluation import plots
        from cifar100.evaluation.gradcam import grad_cam

        model, dataset, test = self._evaluation()
        if not 1 <= n <= plots.GRADCAM_COLUMNS:
            raise ConfigError(f"n must be between 1 and {plots.GRADCAM_COLUMNS}, got {n}")
        pick = np.random.default_rng(seed).choice(len(dataset.test), size=min(n, len(dataset.test)), replace=False)
        heatmaps, explained = grad_cam(model.classifier, dataset.test.images[pick])
        return plots.plot_gradcam(dataset.test.images[pick], heatmaps, [model.classes[i] for i in test.labels[pick]],
                                  [model.classes[i] for i in explained], test.confidences[pick])
