"""What every dataset source becomes: a `Dataset` of uint8 (N, 32, 32, 3) images and int64
labels per split, plus the operations on it that do not care where it came from."""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from cifar100.errors import ConfigError


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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def fine_to_coarse(self) -> list[int] | None:
        """Superclass of each fine class, read off the training labels (CIFAR-100's mapping is
        a function: every image of a fine class has the same superclass)."""
        if self.train.coarse_labels is None:
            return None
        mapping = np.full(self.num_classes, -1, dtype=np.int64)
        mapping[self.train.labels] = self.train.coarse_labels
        return mapping.tolist()


def split_train_val(train: Split, val_size: int, seed: int = 0) -> tuple[Split, Split]:
    """Carve a stratified validation split off the training set (the same share of every
    class), seeded, so model selection never looks at the test set."""
    if val_size <= 0:
        return train, Split(train.images[:0], train.labels[:0], None if train.coarse_labels is None else train.coarse_labels[:0])
    if val_size >= len(train):
        raise ConfigError(f"validation size {val_size} must be smaller than the training set ({len(train)} images)")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(train.labels, return_counts=True)
    # Largest-remainder allocation: per-class shares that sum exactly to val_size.
    exact = counts * (val_size / len(train))
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: val_size - take.sum()]:
        take[i] += 1
    val_index = []
    for cls, k in zip(classes, take):
        members = np.flatnonzero(train.labels == cls)
        val_index.append(rng.choice(members, size=k, replace=False))
    val_index = np.sort(np.concatenate(val_index))
    mask = np.ones(len(train), dtype=bool)
    mask[val_index] = False
    return train.subset(np.flatnonzero(mask)), train.subset(val_index)


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
