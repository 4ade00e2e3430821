"""What every dataset source becomes: a `Dataset` of uint8 (N, 32, 32, 3) images and int64
labels per split, plus the operations on it that do not care where it came from."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cifar100.errors import ConfigError

# The split options' defaults, one set for every entry point (TrainConfig, load_dataset, the
# command line, a run recorded before the options were): they all carve the same splits.
DEFAULT_VAL_SIZE = 0.1  # of CIFAR-100's 50,000 training images, the usual 5,000
DEFAULT_TEST_SIZE = 0.2  # carved off a <class>/<image> folder, which has no test/ of its own
DEFAULT_SPLIT_SEED = 0
DEFAULT_CENTER_CROP = True  # an image folder's photos are centre-cropped, as `predict` crops


@dataclass
class Split:
    images: np.ndarray  # uint8 (N, 32, 32, 3), RGB
    labels: np.ndarray  # int64 (N,)
    coarse_labels: np.ndarray | None = None  # int64 (N,), CIFAR-100 superclasses

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "Split":
        coarse = None if self.coarse_labels is None else self.coarse_labels[index]
        return Split(self.images[index], self.labels[index], coarse)


@dataclass
class Dataset:
    name: str  # "cifar100", "cifar10", or the image folder's name
    classes: list[str]
    train: Split
    test: Split
    coarse_classes: list[str] | None = None
    spec: str = ""  # what the user passed to --dataset, to load it again later
    val: Split | None = None  # a validation split the source provides (an image folder's val/)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def val_from(self) -> str:
        """Where a run's validation split comes from: "folder" (the source's own, `val`) or
        "train" (carved off the training images by `training_splits`)."""
        return "folder" if self.val is not None else "train"

    @property
    def fine_to_coarse(self) -> list[int] | None:
        """Superclass of each fine class, read off the training labels (CIFAR-100's mapping is
        a function: every image of a fine class has the same superclass)."""
        if self.train.coarse_labels is None:
            return None
        mapping = np.full(self.num_classes, -1, dtype=np.int64)
        mapping[self.train.labels] = self.train.coarse_labels
        return mapping.tolist()


def check_size(size: float, what: str, *, allow_zero: bool = True) -> None:
    """A split size is a fraction of the images below 1 (0.1) or a whole count from 1 up (5000);
    0 means no split, where `allow_zero`. Anything else is a ConfigError naming `what`."""
    if not 0 <= size < math.inf:  # NaN fails this too
        raise ConfigError(f"{what} must be >= 0, got {_shown(size)}")
    if size == 0 and not allow_zero:
        raise ConfigError(f"{what} must be a fraction in (0, 1) (0.2) or a whole count >= 1 (500), got 0")
    if size >= 1 and not float(size).is_integer():
        raise ConfigError(f"{what} {_shown(size)} is neither a fraction below 1 (0.1) nor a whole count (5000)")


def split_count(size: float, n: int, what: str, of: str = "the training set") -> int:
    """How many of `n` images a split size asks for: a fraction below 1 of them (rounded half
    up, and at least one), a whole count from 1 up as it is, 0 none. The split must leave
    images behind: a count that takes all of them is a ConfigError naming `what` and `of`."""
    check_size(size, what)
    if size == 0:
        return 0
    count = int(size) if size >= 1 else max(1, math.floor(size * n + 0.5))
    if count >= n:
        asked = _shown(size) if size >= 1 else f"{_shown(size)} ({count} images)"
        raise ConfigError(f"{what} {asked} must be smaller than {of} ({n} images)")
    return count


def _shown(size: float) -> str:
    """A size as the user wrote it: 5000, not 5000.0."""
    return str(int(size)) if math.isfinite(size) and float(size).is_integer() else f"{size:g}"


def stratified_split(split: Split, count: int, seed: int = 0, *, keep_one_each: bool = False) -> tuple[Split, Split]:
    """Take `count` images off `split`: the same share of every class, chosen at random with
    `seed`. Returns (the rest, the taken). The shares are rounded by largest remainder, so they
    sum exactly to `count`; with `keep_one_each`, every class keeps at least one image on each
    side (a test split carved from a folder), which can move the total by a few images. Every
    class then needs at least two images: the caller checks that and names the classes."""
    if count <= 0:
        return split, split.subset(np.zeros(0, dtype=np.int64))
    if count >= len(split):
        raise ConfigError(f"a split of {count} images must be smaller than the {len(split)} images it is taken from")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(split.labels, return_counts=True)
    # Largest-remainder allocation: per-class shares that sum exactly to count.
    exact = counts * (count / len(split))
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: count - take.sum()]:
        take[i] += 1
    if keep_one_each:
        take = np.minimum(np.maximum(take, 1), counts - 1)
    taken = []
    for cls, k in zip(classes, take):
        members = np.flatnonzero(split.labels == cls)
        taken.append(rng.choice(members, size=k, replace=False))
    taken = np.sort(np.concatenate(taken))
    rest = np.ones(len(split), dtype=bool)
    rest[taken] = False
    return split.subset(np.flatnonzero(rest)), split.subset(taken)


def split_train_val(train: Split, val_size: float, seed: int = DEFAULT_SPLIT_SEED) -> tuple[Split, Split]:
    """Carve a stratified validation split off the training set (the same share of every
    class), seeded, so model selection never looks at the test set. `val_size`: a fraction
    below 1 (0.1) or a whole count (5000); 0 gives an empty validation split."""
    return stratified_split(train, split_count(val_size, len(train), "validation size"), seed)


def print_warning(message: str) -> None:
    print(f"cifar100: warning: {message}", file=sys.stderr)


def training_splits(
    dataset: Dataset, val_size: float, split_seed: int, *, warn: Callable[[str], None] | None = print_warning
) -> tuple[Split, Split]:
    """A run's training and validation images: the dataset's own validation split when it has
    one (an image folder's val/; val_size is then not used), else `val_size` carved off its
    training images. Training, evaluation and `cifar100 data stats` all ask here, so they
    always see the same split. A val_size other than the default that the val/ folder makes
    unused is told to `warn` (one line on stderr; None: not told)."""
    if dataset.val is not None:
        if warn is not None and val_size != DEFAULT_VAL_SIZE:
            warn(f"val_size {_shown(val_size)} is not used: the dataset {dataset.name!r} has its own val/ "
                 f"(or validation/) folder, which is the validation split")
        return dataset.train, dataset.val
    return split_train_val(dataset.train, val_size, split_seed)


def channel_mean_std(images: np.ndarray, chunk: int = 1024) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 (N, H, W, 3) images, on the 0..1 scale.
    Sums run in int64 over chunks, so 50,000 images need no float copy of the whole set."""
    if len(images) == 0:
        return [float("nan")] * 3, [float("nan")] * 3
    total = np.zeros(3, dtype=np.int64)
    squares = np.zeros(3, dtype=np.int64)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, 3).astype(np.int64)
        total += block.sum(axis=0)
        squares += (block * block).sum(axis=0)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return (mean / 255.0).tolist(), (std / 255.0).tolist()
