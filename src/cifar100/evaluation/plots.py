"""Every figure the tool draws, in one module: numbers in, a figure out. Each `plot_*` function
takes plain arrays/lists; given a `path` it writes the PNG there (atomically) and returns the
path, without one it returns the matplotlib `Figure` (a notebook shows it inline; a script can
`savefig` it). Figures are built as `Figure` objects, never through pyplot: no backend is
switched and no global state is touched, so a notebook keeps its inline plots and a server
needs no display."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from cifar100.fileio import atomic_write_bytes

DPI = 100


def png_bytes(fig: Figure) -> bytes:
    """The figure rendered as a PNG at DPI, in memory."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


class InlineFigure(Figure):
    """A Figure that a notebook shows inline by itself, as a PNG, whatever backend (or none)
    the kernel has selected: IPython asks any object for `_repr_png_`."""

    def _repr_png_(self) -> bytes:
        return png_bytes(self)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render to PNG in memory, then write atomically."""
    return atomic_write_bytes(path, png_bytes(fig))


def _done(fig: Figure, path: str | Path | None) -> Path | Figure:
    return fig if path is None else save_figure(fig, path)


# `cifar100 data stats`: one stacked bar per class. Fixed size whatever the class count; class
# names are thinned out past MAX_NAMED_CLASSES so they stay legible.
CLASS_DISTRIBUTION_SIZE = (16.0, 6.0)  # inches: 1600 x 600 pixels at DPI 100
MAX_NAMED_CLASSES = 100
SPLIT_COLORS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}


def plot_class_distribution(
    class_names: list[str], counts_by_split: dict, path: str | Path | None = None, title: str = "Images per class"
) -> Path | Figure:
    """Stacked bars of images per class, one layer per split.

    counts_by_split: split name ("train", "val", "test", ...) -> a count per class, in the
    order of class_names."""
    n = len(class_names)
    if n == 0:
        raise ValueError("the class distribution needs at least one class")
    for split, counts in counts_by_split.items():
        if len(counts) != n:
            raise ValueError(f"{split}: {len(counts)} counts for {n} classes")
    fig = InlineFigure(figsize=CLASS_DISTRIBUTION_SIZE)
    ax = fig.subplots()
    positions = list(range(n))
    bottom = [0] * n
    for i, (split, counts) in enumerate(counts_by_split.items()):
        counts = [int(c) for c in counts]
        color = SPLIT_COLORS.get(split, f"C{i + 3}")
        ax.bar(positions, counts, bottom=bottom, width=0.8, color=color, label=f"{split} ({sum(counts):,} images)")
        bottom = [b + c for b, c in zip(bottom, counts)]
    step = max(1, -(-n // MAX_NAMED_CLASSES))
    ax.set_xticks(positions[::step])
    ax.set_xticklabels(class_names[::step], rotation=90, fontsize=8 if n <= 40 else 6)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("images")
    ax.set_title(f"{title} ({n} classes)")
    ax.legend(loc="upper right", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.subplots_adjust(left=0.05, right=0.99, top=0.93, bottom=0.2)
    return _done(fig, path)


# Gallery of a user's own photos (`cifar100 predict --gallery`): one cell per image, in a fixed
# grid, so the PNG's pixel size depends only on the number of images.
USER_GALLERY_COLUMNS = 2
USER_GALLERY_CELL = (6.4, 1.9)  # inches per image: title, two pictures, three bars
USER_GALLERY_HEADER = 0.6  # inches for the figure title


def plot_prediction_gallery_user(
    originals,
    model_inputs,
    names,
    top_classes,
    top_probabilities,
    true_labels,
    path: str | Path | None = None,
    title: str = "Predictions on your images",
) -> Path | Figure:
    """Each image twice (the original thumbnail, and the 32x32 the model saw, upscaled without
    smoothing so its real pixels show), beside bars of its top-3 classes. When its folder gave
    a true label, the cell says PASSED or FAILED and the true class's bar is green.

    originals: uint8 (h, w, 3) arrays; model_inputs: uint8 (32, 32, 3); names: str;
    top_classes / top_probabilities: the top-3 per image; true_labels: str or None."""
    from matplotlib.patches import Rectangle

    n = len(model_inputs)
    if n == 0:
        raise ValueError("the gallery needs at least one image")
    cols = min(USER_GALLERY_COLUMNS, n)
    rows = -(-n // cols)
    cell_w, cell_h = USER_GALLERY_CELL
    fig_w, fig_h = cols * cell_w, rows * cell_h + USER_GALLERY_HEADER
    fig, ax = _inch_canvas(fig_w, fig_h)  # one axes in inches: 3 axes per image would be slow
    passed = [labels[0] == label for labels, label in zip(top_classes, true_labels) if label is not None]
    if passed:
        title += f"  -  PASSED {sum(passed)}/{len(passed)} ({100 * sum(passed) / len(passed):.0f}%)"
    ax.text(fig_w / 2, fig_h - 0.3, title, ha="center", va="center", fontsize=13, weight="bold")

    side, bar_left, bar_len = 1.35, 4.2, 1.6  # inches: picture side, where bars start, bar at 100%
    for i in range(n):
        col, row = i % cols, i // cols
        x0, y0 = col * cell_w, fig_h - USER_GALLERY_HEADER - (row + 1) * cell_h
        label = true_labels[i]
        name = names[i] if len(names[i]) <= 44 else names[i][:20] + "..." + names[i][-21:]
        ax.text(x0 + 0.15, y0 + cell_h - 0.17, name, fontsize=9, va="center")
        if label is not None:
            ok = top_classes[i][0] == label
            verdict = f"PASSED ({label})" if ok else f"FAILED (true: {label})"
            ax.text(x0 + cell_w - 0.15, y0 + cell_h - 0.17, verdict, fontsize=9, va="center", ha="right",
                    weight="bold", color="tab:green" if ok else "tab:red")
        for k, (image, caption, interpolation) in enumerate(
            [(originals[i], "original", "antialiased"), (model_inputs[i], "model input 32x32", "nearest")]
        ):
            # Fit the picture in a side x side box, keeping its shape.
            h, w = image.shape[:2]
            pw, ph = (side, side * h / w) if w >= h else (side * w / h, side)
            left = x0 + 0.15 + k * 1.45 + (side - pw) / 2
            bottom = y0 + 0.25 + (side - ph) / 2
            ax.imshow(image, interpolation=interpolation, aspect="auto", extent=(left, left + pw, bottom, bottom + ph))
            ax.add_patch(Rectangle((left, bottom), pw, ph, fill=False, edgecolor="0.7", linewidth=0.8))
            ax.text(x0 + 0.15 + k * 1.45 + side / 2, y0 + 0.12, caption, fontsize=7, ha="center", va="center")
        for rank, (cls, p) in enumerate(zip(top_classes[i], top_probabilities[i])):
            y = y0 + 1.3 - rank * 0.42
            color = "tab:green" if cls == label else ("tab:blue" if label is None else "0.6")
            ax.add_patch(Rectangle((x0 + bar_left, y), bar_len, 0.28, color="0.92", linewidth=0))
            ax.add_patch(Rectangle((x0 + bar_left, y), bar_len * float(p), 0.28, color=color, linewidth=0))
            ax.text(x0 + bar_left - 0.08, y + 0.14, cls, fontsize=8, ha="right", va="center")
            ax.text(x0 + bar_left + bar_len + 0.06, y + 0.14, f"{100 * float(p):.1f}%", fontsize=8, va="center")
    return _done(fig, path)


# --- Evaluation figures (evaluate.py, compare.py) -------------------------------------------
# Every size is fixed in inches (x DPI = pixels), so each PNG has a known pixel size.
HISTORY_SIZE = (15.0, 4.5)
CONFUSION_SIZE = (14.0, 12.0)
SUPERCLASS_CONFUSION_SIZE = (11.0, 10.0)
PER_CLASS_SIZE = (16.0, 6.5)
RELIABILITY_SIZE = (7.0, 7.5)
EVAL_GALLERY_GRID = (4, 8)  # rows, columns: the gallery is this size whatever the image count
EVAL_GALLERY_CELL = (1.9, 2.25)  # inches per image: three lines of text above a picture
EVAL_GALLERY_HEADER = 0.6
GRADCAM_COLUMNS = 8
GRADCAM_SIZE = (16.0, 5.2)
PASSED_COLOR = "#1a9641"
FAILED_COLOR = "#d7191c"


def _percent_axis(ax) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0))


def _finite(x, y):
    """(x, y) with the points where y is missing (NaN) left out: a run without a validation
    split still draws its training curves."""
    import numpy as np

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(y)
    return x[keep], y[keep]


def _history_axes(title: str):
    fig = InlineFigure(figsize=HISTORY_SIZE)
    axes = fig.subplots(1, 3)
    fig.suptitle(title, fontsize=13, weight="bold")
    for ax, (name, ylabel) in zip(axes, [("Accuracy", "accuracy"), ("Loss", "loss"), ("Learning rate", "learning rate")]):
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    _percent_axis(axes[0])
    fig.subplots_adjust(left=0.05, right=0.985, bottom=0.13, top=0.84, wspace=0.25)
    return fig, axes


def plot_history(history: dict, path: str | Path | None = None, best_epoch: int | None = None, title: str = "Training history") -> Path | Figure:
    """Keras-style curves: train/validation accuracy and loss per epoch, and the learning rate,
    with the best epoch marked on every panel. history: columns of history.csv as sequences
    (accuracies as fractions 0..1)."""
    import numpy as np

    epochs = np.asarray(history["epoch"], dtype=float)
    if len(epochs) == 0:
        raise ValueError("the history has no epochs to plot")
    fig, (acc_ax, loss_ax, lr_ax) = _history_axes(title)
    # The train loss is the objective as optimised (label smoothing, mixup), the validation
    # loss plain cross-entropy: the legend says so, or the gap between them would mislead.
    for ax, column, label, color in [
        (acc_ax, "train_acc", "train", "tab:blue"), (acc_ax, "val_acc", "validation", "tab:orange"),
        (loss_ax, "train_loss", "train (objective as optimised)", "tab:blue"),
        (loss_ax, "val_loss", "validation (cross-entropy)", "tab:orange"),
    ]:
        x, y = _finite(epochs, history[column])
        if len(x):
            ax.plot(x, y, "-", marker="o" if len(x) <= 30 else None, markersize=3, color=color, label=label)
    x, y = _finite(epochs, history["lr"])
    lr_ax.plot(x, y, color="tab:green", marker="o" if len(x) <= 30 else None, markersize=3)
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if best_epoch is not None:
        for ax in (acc_ax, loss_ax, lr_ax):
            ax.axvline(best_epoch, color="0.4", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        row = int(np.flatnonzero(epochs == best_epoch)[0]) if (epochs == best_epoch).any() else None
        if row is not None and np.isfinite(float(history["val_acc"][row])):
            best_acc = float(history["val_acc"][row])
            acc_ax.plot([best_epoch], [best_acc], marker="*", markersize=14, color="tab:red", zorder=5)
            acc_ax.annotate(f"{100 * best_acc:.1f}%", (best_epoch, best_acc), textcoords="offset points",
                            xytext=(6, -14), fontsize=9, color="tab:red")
    acc_ax.legend(loc="lower right", fontsize=9)
    loss_ax.legend(loc="upper right", fontsize=9)
    return _done(fig, path)


def plot_history_comparison(histories: dict, path: str | Path | None = None, title: str = "Runs compared") -> Path | Figure:
    """Several runs' histories overlaid, one colour per run: validation solid, training dashed.
    histories: run name -> history columns (as for plot_history)."""
    if not histories:
        raise ValueError("no runs to compare")
    fig, (acc_ax, loss_ax, lr_ax) = _history_axes(title)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, history) in enumerate(histories.items()):
        color = colors[i % len(colors)]
        for ax, split, style in [(acc_ax, "val", "-"), (acc_ax, "train", "--"), (loss_ax, "val", "-"), (loss_ax, "train", "--")]:
            column = f"{split}_acc" if ax is acc_ax else f"{split}_loss"
            x, y = _finite(history["epoch"], history[column])
            if len(x):
                ax.plot(x, y, style, color=color, linewidth=1.8 if split == "val" else 1.0,
                        label=f"{name} ({'validation' if split == 'val' else 'train'})")
        x, y = _finite(history["epoch"], history["lr"])
        lr_ax.plot(x, y, color=color, label=name)
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    acc_ax.legend(loc="lower right", fontsize=8)
    lr_ax.legend(loc="upper right", fontsize=8)
    return _done(fig, path)


def plot_accuracy_vs_time(runs: dict, path: str | Path | None = None, title: str = "Accuracy against training time") -> Path | Figure:
    """One colour per preset: each run's validation accuracy after every epoch against the
    training clock (minutes, validation included), and its final test top-1 as a marker at the
    end. runs: preset -> list of {"minutes": [...], "val_acc": [...], "test_top1": float | None}."""
    if not runs:
        raise ValueError("no runs to plot")
    fig = InlineFigure(figsize=(9.0, 5.5))
    ax = fig.subplots()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (preset, items) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        for j, run in enumerate(items):
            x, y = _finite(run["minutes"], run["val_acc"])
            ax.plot(x, y, "-", color=color, linewidth=1.2, alpha=0.8,
                    label=f"{preset} (validation, {len(items)} run{'s' if len(items) > 1 else ''})" if j == 0 else None)
            if run.get("test_top1") is not None and len(x):
                ax.plot([x[-1]], [run["test_top1"]], marker="*", markersize=11, color=color, linestyle="none",
                        label=f"{preset} (test top-1 of the selected epoch)" if j == 0 else None)
    ax.set_xlabel("training minutes (epochs and validation)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _percent_axis(ax)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    return _done(fig, path)


def plot_confusion_matrix(
    confusion,
    class_names: list[str],
    path: str | Path | None = None,
    title: str = "Confusion matrix",
    order=None,
    groups: list[tuple[str, int]] | None = None,
    size: tuple[float, float] = CONFUSION_SIZE,
) -> Path | Figure:
    """Row-normalised confusion matrix (each row: where the images of that true class went).
    order: a permutation of the classes (e.g. grouped by superclass); groups: (name, size) runs
    of consecutive classes in that order, drawn as blocks and named on the right. Cells are
    annotated with their percentage when there are 20 classes or fewer."""
    import numpy as np
    from matplotlib.colors import PowerNorm

    confusion = np.asarray(confusion, dtype=float)
    k = len(class_names)
    if confusion.shape != (k, k):
        raise ValueError(f"confusion matrix {confusion.shape} does not match {k} class names")
    order = np.arange(k) if order is None else np.asarray(order)
    confusion = confusion[np.ix_(order, order)]
    names = [class_names[i] for i in order]
    support = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, support, out=np.zeros_like(confusion), where=support > 0)
    fontsize = max(4.5, min(10.0, 560 / k))
    # Lay the square matrix out in inches: margins wide enough for the longest class name (and
    # superclass name on the right), then the colour bar; the rest of the figure is the matrix.
    width, height = size
    name_in = 0.45 + max(len(n) for n in names) * fontsize * 0.6 / 72
    group_in = 0.3 + max(len(g) for g, _ in groups) * (fontsize + 1) * 0.6 / 72 if groups else 0.2
    side = min(width - name_in - group_in - 1.2, height - name_in - 0.8)
    left = name_in + (width - name_in - group_in - 1.2 - side) / 2
    fig = InlineFigure(figsize=size)
    ax = fig.add_axes((left / width, name_in / height, side / width, side / height))
    # A square-root colour scale: the few-percent confusions that matter stay visible next to
    # a diagonal near 100%.
    image = ax.imshow(shares, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, rotation=90, fontsize=fontsize)
    ax.set_yticklabels(names, fontsize=fontsize)
    ax.set_xlabel("predicted class", fontsize=11)
    ax.set_ylabel("true class", fontsize=11)
    ax.set_title(title, fontsize=13, weight="bold", pad=12)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                label = confusion_cell_label(confusion[i, j], shares[i, j])
                if label:
                    ax.text(j, i, label, ha="center", va="center", fontsize=8,
                            color="white" if shares[i, j] > 0.5 else "black")
    if groups:
        right = ax.secondary_yaxis("right")
        start, centers, labels = 0, [], []
        for name, count in groups:
            if start:
                ax.axhline(start - 0.5, color="0.35", linewidth=0.6)
                ax.axvline(start - 0.5, color="0.35", linewidth=0.6)
            centers.append(start + (count - 1) / 2)
            labels.append(name)
            start += count
        right.set_yticks(centers)
        right.set_yticklabels(labels, fontsize=max(6.0, fontsize + 1))
        right.tick_params(length=0)
    bar = fig.add_axes(((left + side + group_in) / width, name_in / height, 0.18 / width, side / 2 / height))
    fig.colorbar(image, cax=bar, label="share of the true class's images" + (" (cells: %)" if k <= 20 else ""))
    _percent_axis(bar)
    return _done(fig, path)


def confusion_cell_label(count: float, share: float) -> str:
    """A cell's percentage: blank where no image went, "<1" where some did but under half a
    percent (never a "0" that reads as none)."""
    if count <= 0:
        return ""
    return "<1" if share < 0.005 else f"{100 * share:.0f}"


def per_class_colors(sorted_accuracies, named: int) -> list[str]:
    """Bar colours for accuracies sorted best first: the `named` best in green and the `named`
    worst in red, but only where they are above (green) or below (red) the mean of the classes,
    so a class is never called worst while doing better than average."""
    import numpy as np

    values = np.asarray(sorted_accuracies, dtype=float)
    k, mean = len(values), float(values.mean())
    colors = ["tab:blue"] * k
    for i in range(min(named, k // 2)):
        if values[i] > mean:
            colors[i] = PASSED_COLOR
        if values[k - 1 - i] < mean:
            colors[k - 1 - i] = FAILED_COLOR
    return colors


def plot_per_class_accuracy(class_names: list[str], accuracies, path: str | Path | None = None, named: int = 5,
                            title: str = "Per-class accuracy") -> Path | Figure:
    """Every class's accuracy, sorted, best on the left; the `named` best and worst classes in
    green and red and listed in a box. Classes with no test image (NaN) are left out."""
    import numpy as np

    accuracies = np.asarray(accuracies, dtype=float)
    if len(accuracies) != len(class_names):
        raise ValueError(f"{len(accuracies)} accuracies for {len(class_names)} classes")
    present = np.flatnonzero(np.isfinite(accuracies))
    if len(present) == 0:
        raise ValueError("no class has an accuracy to plot")
    order = present[np.argsort(-accuracies[present], kind="stable")]
    values = accuracies[order]
    k = len(order)
    colors = per_class_colors(values, named)
    fig = InlineFigure(figsize=PER_CLASS_SIZE)
    ax = fig.add_axes((0.05, 0.25, 0.72, 0.66))
    ax.bar(range(k), values, color=colors, width=0.8)
    mean = float(values.mean())
    ax.axhline(mean, color="0.3", linestyle="--", linewidth=1, label=f"mean of classes {100 * mean:.1f}%")
    ax.set_xticks(range(k))
    ax.set_xticklabels([class_names[i] for i in order], rotation=90, fontsize=max(5.0, min(10.0, 700 / k)))
    ax.set_xlim(-0.7, k - 0.3)
    ax.set_ylim(0, 1.02)
    _percent_axis(ax)
    ax.set_ylabel("accuracy (share of the class's test images)")
    ax.set_title(f"{title} ({k} classes, sorted)", fontsize=13, weight="bold")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    best = [i for i, c in zip(order, colors) if c == PASSED_COLOR]
    worst = [i for i, c in zip(order[::-1], colors[::-1]) if c == FAILED_COLOR]
    lines = ["Best classes"] + [f"  {class_names[i]}: {100 * accuracies[i]:.1f}%" for i in best]
    lines += ["", "Worst classes"] + [f"  {class_names[i]}: {100 * accuracies[i]:.1f}%" for i in worst]
    fig.text(0.8, 0.9, "\n".join(lines), va="top", fontsize=10, family="monospace")
    return _done(fig, path)


def plot_reliability_diagram(edges, bin_confidence, bin_accuracy, bin_count, ece: float, path: str | Path | None = None,
                             title: str = "Reliability diagram") -> Path | Figure:
    """Confidence against accuracy per confidence bin, with the diagonal of a perfectly
    calibrated model; the gaps are shaded and the lower panel shows how many predictions
    fall in each bin."""
    import numpy as np

    edges = np.asarray(edges, dtype=float)
    conf = np.asarray(bin_confidence, dtype=float)
    acc = np.asarray(bin_accuracy, dtype=float)
    count = np.asarray(bin_count, dtype=float)
    left, width = edges[:-1], np.diff(edges)
    used = count > 0
    fig = InlineFigure(figsize=RELIABILITY_SIZE)
    (ax, hist_ax) = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    fig.subplots_adjust(left=0.13, right=0.96, top=0.91, bottom=0.09, hspace=0.08)
    ax.bar(left[used], acc[used], width=width[used], align="edge", color="tab:blue", edgecolor="white", label="accuracy")
    gap_bottom = np.minimum(acc, conf)[used]
    ax.bar(left[used], np.abs(acc - conf)[used], bottom=gap_bottom, width=width[used], align="edge",
           color="tab:red", alpha=0.35, hatch="//", edgecolor="tab:red", label="gap to confidence")
    ax.plot([0, 1], [0, 1], "--", color="0.3", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=13, weight="bold")
    ax.legend(loc="upper left", fontsize=9)
    ax.text(0.97, 0.05, f"ECE = {100 * ece:.2f}%", transform=ax.transAxes, ha="right", fontsize=12,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6"})
    ax.grid(alpha=0.3)
    total = max(count.sum(), 1)
    hist_ax.bar(left, count / total, width=width, align="edge", color="0.5", edgecolor="white")
    hist_ax.set_ylabel("share of\npredictions")
    hist_ax.set_xlabel("confidence (top-1 probability)")
    hist_ax.grid(alpha=0.3)
    return _done(fig, path)


def _inch_canvas(width: float, height: float):
    """A figure with one invisible axes whose data units are inches from the bottom-left
    corner: many pictures and labels go on it without an axes each (32 axes cost seconds)."""
    fig = InlineFigure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def plot_prediction_gallery(images, true_names: list[str], predicted_names: list[str], confidences, path: str | Path | None = None,
                            title: str = "Predictions on test images", count_passed: bool = True) -> Path | Figure:
    """Test images in a fixed grid (EVAL_GALLERY_GRID), each with its true and predicted class
    and the confidence, framed and marked PASSED (green) or FAILED (red). `count_passed` adds
    the PASSED count to the title (not for a gallery chosen to be all mistakes)."""
    from matplotlib.patches import Rectangle

    rows, cols = EVAL_GALLERY_GRID
    if len(images) > rows * cols:
        raise ValueError(f"the gallery holds at most {rows * cols} images, got {len(images)}")
    cell_w, cell_h = EVAL_GALLERY_CELL
    fig_w, fig_h = cols * cell_w, rows * cell_h + EVAL_GALLERY_HEADER
    fig, ax = _inch_canvas(fig_w, fig_h)
    passed = sum(t == p for t, p in zip(true_names, predicted_names))
    if len(images) and count_passed:
        title += f"  -  PASSED {passed}/{len(images)}"
    ax.text(fig_w / 2, fig_h - 0.3, title, ha="center", va="center", fontsize=13, weight="bold")
    side = 1.35  # inches of picture, centred in the cell under three lines of text
    for i, image in enumerate(images):
        row, col = divmod(i, cols)
        ok = true_names[i] == predicted_names[i]
        color = PASSED_COLOR if ok else FAILED_COLOR
        left = col * cell_w + (cell_w - side) / 2
        bottom = fig_h - EVAL_GALLERY_HEADER - (row + 1) * cell_h + 0.08
        ax.imshow(image, interpolation="nearest", aspect="auto", extent=(left, left + side, bottom, bottom + side))
        ax.add_patch(Rectangle((left, bottom), side, side, fill=False, edgecolor=color, linewidth=4))
        top, x = bottom + side + 0.08, (col + 0.5) * cell_w
        ax.text(x, top + 0.5, f"{'PASSED' if ok else 'FAILED'}  {100 * float(confidences[i]):.0f}%",
                ha="center", va="bottom", fontsize=9, weight="bold", color=color)
        ax.text(x, top + 0.25, f"true: {true_names[i]}", ha="center", va="bottom", fontsize=8)
        ax.text(x, top, f"pred: {predicted_names[i]}", ha="center", va="bottom", fontsize=8, color=color)
    return _done(fig, path)


def plot_gradcam(images, heatmaps, true_names: list[str], predicted_names: list[str], confidences, path: str | Path | None = None,
                 title: str = "Grad-CAM: where the network looked") -> Path | Figure:
    """Each image above its Grad-CAM heat map (for the predicted class) laid over it, at most
    GRADCAM_COLUMNS images. heatmaps: float (N, 32, 32) in 0..1."""
    import numpy as np

    n = len(images)
    if n == 0 or n > GRADCAM_COLUMNS:
        raise ValueError(f"Grad-CAM shows 1 to {GRADCAM_COLUMNS} images, got {n}")
    fig = InlineFigure(figsize=GRADCAM_SIZE)
    axes = fig.subplots(2, GRADCAM_COLUMNS)
    fig.suptitle(title, fontsize=13, weight="bold")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.82, bottom=0.02, wspace=0.08, hspace=0.3)
    for i in range(GRADCAM_COLUMNS):
        top_ax, cam_ax = axes[0, i], axes[1, i]
        for ax in (top_ax, cam_ax):
            ax.set_xticks([])
            ax.set_yticks([])
        if i >= n:
            top_ax.axis("off")
            cam_ax.axis("off")
            continue
        ok = true_names[i] == predicted_names[i]
        top_ax.imshow(images[i], interpolation="nearest")
        top_ax.set_title(f"true: {true_names[i]}", fontsize=9)
        cam_ax.imshow(images[i], interpolation="nearest")
        cam_ax.imshow(np.asarray(heatmaps[i]), cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear",
                      extent=(-0.5, images[i].shape[1] - 0.5, images[i].shape[0] - 0.5, -0.5))
        cam_ax.set_title(f"pred: {predicted_names[i]} {100 * float(confidences[i]):.0f}%", fontsize=9,
                         color=PASSED_COLOR if ok else FAILED_COLOR)
    return _done(fig, path)
