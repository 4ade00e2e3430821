"""`evaluate_run`: the numbers and pictures of a trained model, for a finished or interrupted run
folder or a bare checkpoint. Writes metrics.json, plots/*.png and report.html, and returns the
metrics. `cifar100 train` (and `cifar100.train`) call it at the end of every run; `cifar100
evaluate` calls it again at any time.

Every number is computed once from the model's logits (metrics.py) and every figure is drawn
from those numbers (plots.py), so the figures and metrics.json always agree."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifar100.data.types import DEFAULT_SPLIT_SEED, Dataset, Split, training_splits
from cifar100.errors import CheckpointError, DatasetError
from cifar100.evaluation.gradcam import grad_cam
from cifar100.evaluation.metrics import SplitMetrics, split_metrics, superclass_order
from cifar100.inference import TTA_DESCRIPTION, LoadedModel, load_model
from cifar100.runs import RunFolder, best_epoch, history_columns

GALLERY_SEED = 0  # the random gallery shows the same test images every time
GALLERY_SIZE = 32  # fills plots.EVAL_GALLERY_GRID
GRADCAM_IMAGES = 8


# ---------------------------------------------------------------------------------------------
# Inputs: the run's dataset and splits


def load_evaluation_dataset(model: LoadedModel, data_dir: str | None, quiet: bool) -> Dataset:
    """The dataset the model was trained on, split as its run split it (the same carved test
    split of a <class>/<image> folder), from `data_dir`, else the run's own data dir."""
    from cifar100.data.sources import load_recorded_dataset

    if not model.dataset.get("spec"):
        raise CheckpointError(f"{model.checkpoint_path} does not say which dataset it was trained on")
    if data_dir is None and model.run_dir is not None:
        data_dir = RunFolder(model.run_dir).data_dir()
    return load_recorded_dataset(model.dataset, data_dir, quiet=quiet)


def check_same_classes(model: LoadedModel, dataset: Dataset) -> None:
    if list(model.classes) != list(dataset.classes):
        raise DatasetError(
            f"{model.checkpoint_path} was trained on {len(model.classes)} classes "
            f"({', '.join(model.classes[:4])}, ...) but the dataset {dataset.spec or dataset.name!r} has "
            f"{len(dataset.classes)} ({', '.join(dataset.classes[:4])}, ...): evaluate it on the data it was trained on"
        )


def train_val_splits(model: LoadedModel, dataset: Dataset) -> tuple[Split, Split | None]:
    """The run's own training and validation images: the split it selected its checkpoint on,
    chosen as training chose it (`training_splits`); no validation split when the run used none.
    A dataset that gained or lost its val/ folder since training is a DatasetError: carving
    another split would give numbers on images the run never selected its checkpoint on."""
    info = model.dataset
    recorded, now = info.get("val_from"), dataset.val_from
    if recorded in ("folder", "train") and recorded != now:
        had, has = ("its own val/ folder", "none") if recorded == "folder" else ("no val/ folder", "one")
        raise DatasetError(
            f"{model.checkpoint_path} was trained on {dataset.spec or dataset.name!r} when it had {had}, and "
            f"now it has {has}: the dataset changed since training. Evaluate it on the data it was trained on"
        )
    seed = info.get("split_seed")
    # warn=None: a val_size the val/ folder leaves unused was reported when the run trained.
    train, val = training_splits(dataset, float(info.get("val_size") or 0),
                                 DEFAULT_SPLIT_SEED if seed is None else int(seed), warn=None)
    return train, (val if len(val) else None)


# ---------------------------------------------------------------------------------------------
# Figures


@dataclass
class Figure:
    key: str
    title: str
    path: Path
    caption: str


def draw_figures(
    model: LoadedModel,
    dataset: Dataset,
    test: SplitMetrics,
    history: list[dict[str, float]],
    plots_dir: Path,
    split_label: str,
    distribution_splits: dict[str, Split],
) -> list[Figure]:
    """distribution_splits: the train/val/test splits whose class counts the distribution shows."""
    from cifar100.evaluation import plots

    classes = model.classes
    coarse = coarse_classes_of(model, dataset)
    figures: list[Figure] = []

    def add(key: str, title: str, caption: str, draw) -> None:
        path = plots_dir / f"{key}.png"
        draw(path)
        figures.append(Figure(key, title, path, caption))

    if history:
        best = best_epoch(history)
        columns = history_columns(history)
        add("history", "Training history",
            f"Accuracy, loss and learning rate per epoch; the dashed line marks the best epoch ({best}).",
            lambda p: plots.plot_history(columns, p, best_epoch=best, title="Training history"))
    counts = {name: np.bincount(split.labels, minlength=len(classes)) for name, split in distribution_splits.items()}
    add("class_distribution", "Class distribution",
        f"Images per class in the {', '.join(counts)} splits the model was trained and evaluated on.",
        lambda p: plots.plot_class_distribution(classes, counts, p, title=f"Images per class in {dataset.name}"))
    order, groups, ordering = confusion_layout(model, dataset, test)
    add("confusion_matrix", "Confusion matrix",
        f"Where the images of each true class went ({split_label}; rows normalised, {ordering}).",
        lambda p: plots.plot_confusion_matrix(test.confusion, classes, p, order=order, groups=groups,
                                              title=f"Confusion matrix ({split_label}, {ordering})"))
    if test.coarse_confusion is not None and coarse:
        add("superclass_confusion", "Superclass confusion matrix",
            "The fine predictions mapped to their superclasses (numbers are percent of the row).",
            lambda p: plots.plot_confusion_matrix(test.coarse_confusion, coarse, p, size=plots.SUPERCLASS_CONFUSION_SIZE,
                                                  title=f"Superclass confusion ({split_label}, from the fine predictions)"))
    add("per_class_accuracy", "Per-class accuracy", "Every class's accuracy, sorted; the best and worst are named.",
        lambda p: plots.plot_per_class_accuracy(classes, test.per_class.accuracy, p,
                                                title=f"Per-class accuracy ({split_label})"))
    rel = test.reliability
    add("reliability", "Reliability diagram",
        "Confidence against accuracy: bars under the diagonal mean over-confidence.",
        lambda p: plots.plot_reliability_diagram(rel.edges, rel.confidence, rel.accuracy, rel.count, rel.ece, p,
                                                 title=f"Reliability diagram ({split_label})"))

    images = dataset.test.images
    rng = np.random.default_rng(GALLERY_SEED)
    sample = rng.choice(len(images), size=min(GALLERY_SIZE, len(images)), replace=False)

    def names(index: np.ndarray) -> tuple[list[str], list[str]]:
        return [classes[i] for i in test.labels[index]], [classes[i] for i in test.predictions[index]]

    true_names, predicted_names = names(sample)
    add("prediction_gallery", "Prediction gallery",
        f"{len(sample)} random test images (seed {GALLERY_SEED}): green PASSED, red FAILED.",
        lambda p: plots.plot_prediction_gallery(images[sample], true_names, predicted_names,
                                                test.confidences[sample], p,
                                                title=f"Random test images (seed {GALLERY_SEED})"))
    wrong = np.flatnonzero(~test.correct)
    mistakes = wrong[np.argsort(-test.confidences[wrong], kind="stable")][:GALLERY_SIZE]
    true_names, predicted_names = names(mistakes)
    add("confident_mistakes", "Most confident mistakes",
        "The wrong predictions the model was surest of: often label noise or look-alike classes.",
        lambda p: plots.plot_prediction_gallery(images[mistakes], true_names, predicted_names,
                                                test.confidences[mistakes], p, count_passed=False,
                                                title=f"The {len(mistakes)} most confident mistakes (of {len(wrong)})"
                                                if len(wrong) else "Most confident mistakes: none"))
    cam_index = sample[:GRADCAM_IMAGES]
    heatmaps, explained = grad_cam(model.classifier, images[cam_index])
    true_names, predicted_names = names(cam_index)
    add("gradcam", "Grad-CAM",
        "Where the network looked: red regions raised the score of the predicted class most.",
        lambda p: plots.plot_gradcam(images[cam_index], heatmaps, true_names, [classes[i] for i in explained],
                                     test.confidences[cam_index], p))
    return figures


def coarse_classes_of(model: LoadedModel, dataset: Dataset) -> list[str] | None:
    return model.coarse_classes or dataset.coarse_classes


def split_fine_to_coarse(model: LoadedModel, dataset: Dataset) -> tuple[list[int] | None, list[str] | None]:
    """(each class's superclass, the superclass names), or (None, None) without superclasses."""
    coarse = coarse_classes_of(model, dataset)
    return ((model.fine_to_coarse or dataset.fine_to_coarse) if coarse else None), coarse


def confusion_layout(model: LoadedModel, dataset: Dataset, test: SplitMetrics):
    """(class order, superclass groups, how it is ordered) for the confusion matrix: grouped
    by superclass where there are superclasses, else in dataset order."""
    coarse = coarse_classes_of(model, dataset)
    if test.fine_to_coarse is not None and coarse:
        groups = [(coarse[c], int((test.fine_to_coarse == c).sum())) for c in range(len(coarse))]
        return superclass_order(test.fine_to_coarse), groups, "classes grouped by superclass"
    return None, None, "classes in dataset order"


# ---------------------------------------------------------------------------------------------
# The run's numbers


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def default_output_dir(model: LoadedModel) -> Path:
    """A run folder holds its own evaluation; a bare checkpoint gets a sibling folder, a weights
    folder one in the current folder."""
    if model.run_dir is not None:
        return model.run_dir
    return model.derived_path("-evaluation")


def evaluate_run(
    run_or_checkpoint: str | Path,
    *,
    which: str = "best",
    tta: bool = False,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
    out_dir: str | Path | None = None,
    quiet: bool = False,
    dataset: Dataset | None = None,
) -> dict[str, Any]:
    """Evaluate best.pt (or last.pt, or a checkpoint file) on the test and validation splits;
    write metrics.json, plots/ and report.html into the run folder (or `out_dir`) and return
    the metrics. `dataset`: the loaded dataset, when the caller already holds it."""
    from cifar100.evaluation.report import write_report

    started = time.perf_counter()
    model = load_model(run_or_checkpoint, which, device)
    out = Path(out_dir) if out_dir is not None else default_output_dir(model)
    output = RunFolder(out)  # the run folder itself, or a folder laid out like one
    run = RunFolder(model.run_dir) if model.run_dir is not None else None
    config = run.read_config() if run is not None else None
    history = run.read_history() if run is not None else []
    if dataset is None:
        dataset = load_evaluation_dataset(model, data_dir, quiet)
    check_same_classes(model, dataset)
    if len(dataset.test) == 0:
        raise DatasetError(f"the dataset {dataset.spec or dataset.name!r} has no test images to evaluate on")
    fine_to_coarse, coarse = split_fine_to_coarse(model, dataset)

    splits: dict[str, Split] = {"test": dataset.test}
    train, val = train_val_splits(model, dataset)
    if val is not None and len(val):
        splits["val"] = val
    results: dict[str, SplitMetrics] = {}
    for name, split in splits.items():
        if not quiet:
            print(f"evaluating {name}{' with and without TTA' if tta else ''} ({len(split)} images)...", file=sys.stderr)
        if tta:
            plain, augmented = model.plain_and_tta_logits(split.images)
            views = {name: plain, f"{name}_tta": augmented}
        else:
            views = {name: model.logits(split.images)}
        for key, logits in views.items():
            results[key] = split_metrics(logits.numpy(), split.labels, fine_to_coarse, len(coarse) if coarse else None)

    metrics: dict[str, Any] = {
        "checkpoint": _relative(model.checkpoint_path, out),
        "epoch": model.epoch,
        "dataset": {"spec": dataset.spec, "name": dataset.name, "classes": len(model.classes)},
        "model": model.model_config,
        # Probabilities (loss, ECE, confidences) are of logits / temperature, fitted on the val
        # split during training: val loss and ECE are in-sample for it, test's are honest.
        "temperature": model.temperature,
    }
    for key, result in results.items():
        metrics[key] = {"split": key.removesuffix("_tta"), "tta": key.endswith("_tta"),
                        **result.summary(model.classes, coarse)}
    if tta:
        metrics["tta"] = TTA_DESCRIPTION

    test_label = f"test, {len(dataset.test)} images, epoch {model.epoch}"
    figures = draw_figures(model, dataset, results["test"], history, output.plots_dir, test_label,
                           {"train": train, **splits})
    metrics["figures"] = {f.key: _relative(f.path, out) for f in figures}
    if history:
        # The run's training time, from its own per-epoch record (resumed runs included).
        metrics["train_seconds"] = round(sum(row["seconds"] for row in history if np.isfinite(row["seconds"])), 2)
    metrics["evaluated"] = datetime.now().isoformat(timespec="seconds")
    metrics["evaluation_seconds"] = round(time.perf_counter() - started, 2)
    metrics_path = output.write_metrics(metrics)
    report = write_report(output.report_path, metrics=metrics, figures=figures, config=config,
                          title=model.run_dir.name if model.run_dir is not None else model.checkpoint_path.name,
                          evaluate_command=evaluate_command(run_or_checkpoint, which, tta, data_dir, out_dir))
    if not quiet:
        print(format_summary(metrics))
        print(f"wrote {metrics_path}, {output.plots_dir}/ ({len(figures)} figures) and {report}")
    return metrics


def evaluate_command(run_or_checkpoint: str | Path, which: str, tta: bool, data_dir: str | None = None,
                     out_dir: str | Path | None = None) -> str:
    """The command line that makes this evaluation again."""
    import shlex

    parts = ["cifar100", "evaluate", str(run_or_checkpoint)]
    if which != "best":
        parts += ["--which", which]
    if tta:
        parts.append("--tta")
    if data_dir is not None:
        parts += ["--data-dir", str(data_dir)]
    if out_dir is not None:
        parts += ["--out", str(out_dir)]
    return shlex.join(parts)


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def format_summary(metrics: dict[str, Any], confused: int = 5) -> str:
    """The short table printed on the terminal."""
    lines = [f"checkpoint {metrics['checkpoint']} (epoch {metrics['epoch']}), dataset {metrics['dataset']['name']}"]
    header = f"{'split':<12} {'images':>7} {'top-1':>8} {'top-5':>8} {'loss':>8} {'ECE':>7} {'superclass':>11}"
    lines += [header, "-" * len(header)]
    for key in ("test", "test_tta", "val", "val_tta"):
        s = metrics.get(key)
        if not s:
            continue
        label = f"{s['split']} (TTA)" if s["tta"] else s["split"]
        loss = "-" if s["loss"] is None else f"{s['loss']:.4f}"
        lines.append(f"{label:<12} {s['images']:>7} {_percent(s['top1']):>8} {_percent(s['top5']):>8} {loss:>8} "
                     f"{_percent(s['ece']):>7} {_percent(s.get('coarse_top1')):>11}")
    if metrics.get("temperature", 1.0) != 1.0:
        lines.append(f"probabilities calibrated: logits / {metrics['temperature']:.3f} (temperature fitted on val)")
    pairs = metrics["test"]["most_confused"][:confused]
    if pairs:
        lines.append("most confused (test, true -> predicted): "
                     + ", ".join(f"{p['true']} -> {p['predicted']} ({p['count']})" for p in pairs))
    return "\n".join(lines)
