"""metrics.py against numbers worked out by hand on small fixed inputs, plus properties that
must hold for any input (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cifar100.evaluation.metrics import (
    coarse_confusion,
    confusion_matrix,
    cross_entropy,
    expected_calibration_error,
    most_confused,
    per_class,
    reliability,
    split_metrics,
    superclass_order,
    topk_accuracy,
)

# Row 0: label ranked 1st. Row 1: label ranked 3rd. Row 2: a tie at 0.2 between classes 0 and
# 1 goes to the lower index, so label 0 is 2nd. Row 3: all tied, label 3 is last.
SCORES = np.array([
    [0.1, 0.5, 0.3, 0.1],
    [0.4, 0.3, 0.2, 0.1],
    [0.2, 0.2, 0.5, 0.1],
    [0.25, 0.25, 0.25, 0.25],
])
SCORE_LABELS = np.array([1, 2, 0, 3])

# 3 classes: rows are true classes, columns predicted.
LABELS = np.array([0, 0, 1, 2, 2, 2])
PREDICTIONS = np.array([0, 1, 1, 2, 0, 2])
CONFUSION = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])


@pytest.mark.parametrize("k, expected", [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0), (10, 1.0)])
def test_topk_accuracy_by_hand(k, expected):
    assert topk_accuracy(SCORES, SCORE_LABELS, k) == expected


def test_cross_entropy_by_hand():
    # p(true) = 1/2 and 3/4.
    logits = np.array([[0.0, 0.0], [math.log(3), 0.0]])
    assert cross_entropy(logits, np.array([0, 0])) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)
    # Large logits must not overflow.
    assert cross_entropy(np.array([[1000.0, 0.0]]), np.array([1])) == pytest.approx(1000.0)


def test_confusion_matrix_and_per_class_by_hand():
    confusion = confusion_matrix(LABELS, PREDICTIONS, 3)
    assert confusion.tolist() == CONFUSION.tolist()
    pc = per_class(confusion)
    assert pc.support.tolist() == [2, 1, 3]
    assert pc.predicted.tolist() == [2, 2, 2]
    assert pc.recall == pytest.approx([1 / 2, 1, 2 / 3])
    assert pc.accuracy is pc.recall
    assert pc.precision == pytest.approx([1 / 2, 1 / 2, 1])
    assert pc.f1 == pytest.approx([1 / 2, 2 / 3, 4 / 5])


def test_per_class_undefined_values_are_nan_not_zero():
    # Class 2 has images but is never predicted; class 3 has none and is never predicted.
    pc = per_class(confusion_matrix(np.array([0, 1, 2]), np.array([0, 1, 1]), 4))
    assert pc.recall[2] == 0 and np.isnan(pc.precision[2]) and pc.f1[2] == 0
    assert np.isnan(pc.recall[3]) and np.isnan(pc.precision[3]) and np.isnan(pc.f1[3])


def test_most_confused_by_hand():
    assert most_confused(CONFUSION, 5) == [(0, 1, 1), (2, 0, 1)]
    assert most_confused(np.array([[5, 0, 3], [7, 1, 0], [0, 0, 4]]), 1) == [(1, 0, 7)]
    assert most_confused(np.eye(3, dtype=int) * 4) == []


def test_superclass_mapping_by_hand():
    # Fine classes 0 and 1 form superclass 0, class 2 is superclass 1.
    assert coarse_confusion(CONFUSION, [0, 0, 1], 2).tolist() == [[3, 0], [1, 2]]
    result = split_metrics(np.eye(3)[PREDICTIONS] * 5, LABELS, fine_to_coarse=[0, 0, 1], num_coarse=2)
    # Coarse labels [0,0,0,1,1,1], mapped predictions [0,0,0,1,0,1]: one superclass mistake.
    assert result.coarse_top1 == pytest.approx(5 / 6)
    assert result.top1 == pytest.approx(4 / 6)
    assert superclass_order([1, 0, 1, 0]).tolist() == [1, 3, 0, 2]


def test_ece_and_reliability_bins_by_hand():
    conf = np.array([0.95, 0.95, 0.85, 0.55, 0.25])
    correct = np.array([True, False, True, True, False])
    # Bins of 0.1: (0.9,1] holds 2 at mean 0.95 with accuracy 0.5 (gap 0.45), (0.8,0.9] 1 with
    # gap 0.15, (0.5,0.6] 1 with gap 0.45, (0.2,0.3] 1 with gap 0.25.
    assert expected_calibration_error(conf, correct, bins=10) == pytest.approx((2 * 0.45 + 0.15 + 0.45 + 0.25) / 5)
    rel = reliability(conf, correct, bins=10)
    assert rel.count.tolist() == [0, 0, 1, 0, 0, 1, 0, 0, 1, 2]
    assert rel.accuracy[9] == 0.5 and rel.confidence[9] == pytest.approx(0.95)
    assert np.isnan(rel.accuracy[0]) and np.isnan(rel.confidence[0])
    # Bins are closed on the right: 0.5 belongs to (0.4, 0.5], 1.0 to the last bin.
    assert reliability(np.array([0.5, 1.0]), np.array([True, True]), bins=10).count.tolist() == [0] * 4 + [1] + [0] * 4 + [1]
    # A perfectly calibrated set: every bin's accuracy equals its confidence.
    assert expected_calibration_error(np.array([0.5, 0.5, 1.0]), np.array([True, False, True]), bins=10) == 0


def test_split_metrics_summary_is_json_ready():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]))
    result = split_metrics(logits, np.array([0, 1, 2]))
    summary = result.summary(["cat", "dog", "fox"])
    assert summary["images"] == 3 and summary["top1"] == pytest.approx(2 / 3)
    assert summary["top5"] is None  # with 3 classes top-5 would always be 100%
    assert summary["loss"] == pytest.approx(-(math.log(0.7) + math.log(0.3) + math.log(0.8)) / 3, abs=1e-6)
    assert summary["mean_confidence"] == pytest.approx(0.7, abs=1e-6)
    dog = summary["per_class"][1]
    assert dog == {"class": "dog", "support": 1, "accuracy": 0.0, "recall": 0.0, "precision": None, "f1": 0.0}
    assert summary["most_confused"] == [{"true": "dog", "predicted": "cat", "count": 1, "share_of_true": 1.0}]
    assert "coarse_top1" not in summary and "per_superclass" not in summary
    assert sum(summary["reliability"]["count"]) == 3


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: topk_accuracy(np.zeros((2, 3)), np.array([0, 3]), 1), "must lie in 0..2"),
        (lambda: topk_accuracy(np.zeros((2, 3)), np.array([0]), 1), "2 rows of scores but 1 labels"),
        (lambda: topk_accuracy(np.zeros(3), np.array([0]), 1), r"must be \(N, classes\)"),
        (lambda: topk_accuracy(np.zeros((1, 3)), np.array([0.5]), 1), "must be integers"),
        (lambda: topk_accuracy(np.zeros((1, 3)), np.array([0]), 0), "k must be at least 1"),
        (lambda: confusion_matrix(np.array([0, 1]), np.array([1]), 2), "2 labels but 1 predictions"),
        (lambda: reliability(np.array([1.5]), np.array([True])), r"confidences must lie in \[0, 1\]"),
        (lambda: coarse_confusion(CONFUSION, [0, 1], 2), "one superclass per class"),
        (lambda: coarse_confusion(CONFUSION, [0, 1, 2], 2), "must map into 0..1"),
        (lambda: per_class(np.zeros((2, 3))), "must be square"),
    ],
)
def test_bad_input_is_refused_with_a_specific_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@st.composite
def scored_labels(draw):
    n = draw(st.integers(1, 30))
    k = draw(st.integers(2, 8))
    scores = draw(arrays(np.float64, (n, k), elements=st.floats(-20, 20)))
    labels = draw(arrays(np.int64, n, elements=st.integers(0, k - 1)))
    return scores, labels


@settings(max_examples=60, deadline=None)
@given(scored_labels())
def test_properties_of_any_predictions(data):
    scores, labels = data
    n, k = scores.shape
    accuracies = [topk_accuracy(scores, labels, j) for j in range(1, k + 1)]
    assert accuracies == sorted(accuracies) and accuracies[-1] == 1.0
    result = split_metrics(scores, labels)
    assert result.confusion.sum() == n
    assert result.confusion.sum(axis=1).tolist() == np.bincount(labels, minlength=k).tolist()
    assert np.trace(result.confusion) / n == pytest.approx(result.top1)
    assert 0 <= result.ece <= 1 and result.loss >= 0
    # With a single bin, ECE is the gap between mean accuracy and mean confidence.
    one_bin = expected_calibration_error(result.confidences, result.correct, bins=1)
    assert one_bin == pytest.approx(abs(result.correct.mean() - result.confidences.mean()))
