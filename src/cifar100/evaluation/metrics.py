"""Numbers from predictions: top-k accuracy, loss, the confusion matrix and what follows from
it (per-class accuracy/precision/recall, the most confused pairs, the superclass matrix), and
calibration (reliability bins, expected calibration error).

Everything here is plain numpy on arrays already computed (logits and labels), so every number
can be checked by hand on a few rows. `SplitMetrics` gathers them for one split; its
`summary()` is the JSON block that metrics.json stores for that split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# 15 equal-width bins is the usual choice for ECE since Guo et al. (2017), "On Calibration of
# Modern Neural Networks"; using it keeps our numbers comparable with published ones.
ECE_BINS = 15


def _check_labels(labels: np.ndarray, num_classes: int, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def _check_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, classes), got shape {scores.shape}")
    labels = _check_labels(labels, scores.shape[1])
    if len(labels) != len(scores):
        raise ValueError(f"{len(scores)} rows of scores but {len(labels)} labels")
    return scores, labels


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)  # no overflow in exp
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class: the loss the model was trained on
    (without label smoothing, so runs with and without it compare)."""
    logits, labels = _check_scores(logits, labels)
    if len(labels) == 0:
        return float("nan")
    return float(-log_softmax(logits)[np.arange(len(labels)), labels].mean())


def ranked_classes(scores: np.ndarray) -> np.ndarray:
    """Classes of each row from the highest score down; ties go to the lower class index, the
    same rule as argmax, so the top-1 of the ranking is always the prediction."""
    return np.argsort(-np.asarray(scores), axis=1, kind="stable")


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose true label is among the k highest scores (logits or probabilities:
    only the order matters)."""
    scores, labels = _check_scores(scores, labels)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(labels) == 0:
        return float("nan")
    top = ranked_classes(scores)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]: row i is where the images of class i went."""
    labels = _check_labels(labels, num_classes)
    predictions = _check_labels(predictions, num_classes, "predictions")
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


@dataclass
class PerClass:
    """Per-class numbers from a confusion matrix. A class's accuracy is its recall (the share
    of its images predicted as it); both names are kept because users look for either.
    NaN where undefined: no test image of the class (accuracy, recall) or never predicted
    (precision)."""

    support: np.ndarray  # images of the class
    predicted: np.ndarray  # images predicted as the class
    recall: np.ndarray
    precision: np.ndarray
    f1: np.ndarray

    @property
    def accuracy(self) -> np.ndarray:
        return self.recall


def per_class(confusion: np.ndarray) -> PerClass:
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {confusion.shape}")
    hits = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, hits / support, np.nan)
        precision = np.where(predicted > 0, hits / predicted, np.nan)
        # F1 = 2TP / (2TP + FP + FN), the same as the harmonic mean of precision and recall but
        # defined (as 0) for a class with images that is never predicted.
        seen = support + predicted
        f1 = np.where(seen > 0, 2 * hits / seen, np.nan)
    return PerClass(support, predicted, recall, precision, f1)


def most_confused(confusion: np.ndarray, k: int = 10) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal cells as (true, predicted, count), largest first; ties in the
    order of the true class, then the predicted class. Zero cells are never listed."""
    confusion = np.asarray(confusion)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    n = confusion.shape[1]
    return [(int(i // n), int(i % n), int(flat[i])) for i in order if flat[i] > 0]


def check_fine_to_coarse(fine_to_coarse: Sequence[int], num_classes: int, num_coarse: int) -> np.ndarray:
    mapping = np.asarray(fine_to_coarse, dtype=np.int64)
    if mapping.shape != (num_classes,):
        raise ValueError(f"fine_to_coarse must give one superclass per class ({num_classes}), got {mapping.shape}")
    if mapping.min() < 0 or mapping.max() >= num_coarse:
        raise ValueError(f"fine_to_coarse must map into 0..{num_coarse - 1}, found {mapping.min()}..{mapping.max()}")
    return mapping


def coarse_confusion(confusion: np.ndarray, fine_to_coarse: Sequence[int], num_coarse: int) -> np.ndarray:
    """The superclass confusion matrix, from mapping both the true and the predicted fine class
    to its superclass: cell [a, b] sums the fine cells [i, j] with i in a and j in b."""
    confusion = np.asarray(confusion)
    mapping = check_fine_to_coarse(fine_to_coarse, confusion.shape[0], num_coarse)
    onehot = np.zeros((len(mapping), num_coarse), dtype=np.int64)
    onehot[np.arange(len(mapping)), mapping] = 1
    return onehot.T @ confusion @ onehot


def superclass_order(fine_to_coarse: Sequence[int]) -> np.ndarray:
    """Fine classes grouped by superclass (stable, so class order is kept inside a group): in
    this order a confusion matrix shows its mistakes between related classes as blocks on the
    diagonal."""
    return np.argsort(np.asarray(fine_to_coarse), kind="stable")


@dataclass
class Reliability:
    """Equal-width confidence bins over (0, 1]: bin b holds predictions with confidence in
    (b/B, (b+1)/B]. Empty bins have count 0 and NaN confidence/accuracy."""

    edges: np.ndarray  # B + 1
    confidence: np.ndarray  # mean confidence per bin
    accuracy: np.ndarray  # share correct per bin
    count: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean |accuracy - confidence| gap."""
        total = self.count.sum()
        if total == 0:
            return float("nan")
        used = self.count > 0
        gaps = np.abs(self.accuracy[used] - self.confidence[used])
        return float((self.count[used] * gaps).sum() / total)


def reliability(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if confidences.shape != correct.shape or confidences.ndim != 1:
        raise ValueError(f"confidences {confidences.shape} and correct {correct.shape} must be matching 1-D arrays")
    if confidences.size and (confidences.min() < 0 or confidences.max() > 1):
        raise ValueError("confidences must lie in [0, 1]")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins; a confidence of exactly 0 (impossible for a softmax) joins the first.
    index = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=confidences, minlength=bins) / count
        accuracy = np.bincount(index, weights=correct.astype(np.float64), minlength=bins) / count
    return Reliability(edges, confidence, accuracy, count)


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    return reliability(confidences, correct, bins).ece


def _number(x: float, digits: int = 6) -> float | None:
    """JSON has no NaN: undefined numbers are stored as null."""
    x = float(x)
    return None if not np.isfinite(x) else round(x, digits)


@dataclass
class SplitMetrics:
    """Every number for one split, computed once from the logits; `summary()` is its JSON."""

    labels: np.ndarray
    probabilities: np.ndarray
    predictions: np.ndarray
    confidences: np.ndarray
    top1: float
    top5: float | None  # None when there are 5 classes or fewer (it would always be 100%)
    loss: float
    confusion: np.ndarray
    per_class: PerClass
    reliability: Reliability
    fine_to_coarse: np.ndarray | None = None
    coarse_top1: float | None = None
    coarse_confusion: np.ndarray | None = None

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.labels

    @property
    def ece(self) -> float:
        return self.reliability.ece

    def summary(self, classes: Sequence[str], coarse_classes: Sequence[str] | None = None, confused: int = 10) -> dict[str, Any]:
        pc = self.per_class
        out: dict[str, Any] = {
            "images": int(len(self.labels)),
            "top1": _number(self.top1),
            "top5": None if self.top5 is None else _number(self.top5),
            "loss": _number(self.loss),
            "ece": _number(self.ece),
        }
        if self.coarse_top1 is not None:
            out["coarse_top1"] = _number(self.coarse_top1)
        out["mean_confidence"] = _number(self.confidences.mean()) if len(self.confidences) else None
        out["per_class"] = [
            {
                "class": classes[i],
                "support": int(pc.support[i]),
                "accuracy": _number(pc.accuracy[i]),
                "precision": _number(pc.precision[i]),
                "recall": _number(pc.recall[i]),
                "f1": _number(pc.f1[i]),
            }
            for i in range(len(classes))
        ]
        out["most_confused"] = [
            {"true": classes[t], "predicted": classes[p], "count": n, "share_of_true": _number(n / pc.support[t])}
            for t, p, n in most_confused(self.confusion, confused)
        ]
        if self.coarse_confusion is not None and coarse_classes is not None:
            coarse_pc = per_class(self.coarse_confusion)
            out["per_superclass"] = [
                {"superclass": coarse_classes[i], "support": int(coarse_pc.support[i]), "accuracy": _number(coarse_pc.accuracy[i])}
                for i in range(len(coarse_classes))
            ]
        rel = self.reliability
        out["reliability"] = {
            "bins": len(rel.count),
            "confidence": [_number(c) for c in rel.confidence],
            "accuracy": [_number(a) for a in rel.accuracy],
            "count": rel.count.astype(int).tolist(),
        }
        return out


def split_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    fine_to_coarse: Sequence[int] | None = None,
    num_coarse: int | None = None,
    bins: int = ECE_BINS,
) -> SplitMetrics:
    logits, labels = _check_scores(logits, labels)
    num_classes = logits.shape[1]
    probabilities = softmax(logits)
    # The prediction comes from the logits, not the rounded probabilities: logits too close to
    # tell apart after softmax must still give the class that top-k ranks first.
    predictions = logits.argmax(axis=1) if len(labels) else np.zeros(0, dtype=np.int64)
    confidences = probabilities[np.arange(len(labels)), predictions]
    confusion = confusion_matrix(labels, predictions, num_classes)
    result = SplitMetrics(
        labels=labels,
        probabilities=probabilities,
        predictions=predictions,
        confidences=confidences,
        top1=topk_accuracy(logits, labels, 1),
        top5=topk_accuracy(logits, labels, 5) if num_classes > 5 else None,
        loss=cross_entropy(logits, labels),
        confusion=confusion,
        per_class=per_class(confusion),
        reliability=reliability(confidences, predictions == labels, bins),
    )
    if fine_to_coarse is not None:
        if num_coarse is None:
            raise ValueError("num_coarse is needed with fine_to_coarse")
        mapping = check_fine_to_coarse(fine_to_coarse, num_classes, num_coarse)
        result.fine_to_coarse = mapping
        # Superclass accuracy from the fine prediction: no separate 20-way head is involved.
        result.coarse_top1 = float((mapping[predictions] == mapping[labels]).mean()) if len(labels) else float("nan")
        result.coarse_confusion = coarse_confusion(confusion, mapping, num_coarse)
    return result
