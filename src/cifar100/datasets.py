"""Every dataset source (CIFAR-100, CIFAR-10, an image folder or .tar.gz of one) becomes the
same thing: a `Dataset` of uint8 (N, 32, 32, 3) images and int64 labels per split."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
        from cifar100.errors import ConfigError

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


DATA_DIR_ENV = "CIFAR100_DATA"


def default_data_dir() -> Path:
    """Where datasets are cached when --data-dir is not given: $CIFAR100_DATA, else
    ~/.cache/cifar100."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "cifar100"


def load_dataset(
    spec: str, data_dir: str | Path | None = None, download: bool = True, quiet: bool = False
) -> Dataset:
    """The dataset named by `spec`: "cifar100" (default), "cifar10", or the path of an image
    folder or a .tar.gz of one. Archives are downloaded (unless download=False), verified and
    extracted into `data_dir` on first use; image folders are decoded once and cached there."""
    from cifar100.errors import ConfigError

    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    name = str(spec).strip()
    if name.lower() in ("cifar100", "cifar10"):
        from cifar100.cifar_archives import archive_spec, load_cifar

        return load_cifar(archive_spec(name.lower()), data_dir, download=download, quiet=quiet)
    from cifar100.image_folder import is_image_folder_source, load_image_folder

    path = Path(name).expanduser()
    if not is_image_folder_source(path):
        raise ConfigError(
            f"unknown dataset {spec!r}: use cifar100, cifar10, or the path of an image folder "
            f"(train/<class>/*, test/<class>/*) or of a .tar.gz of one"
            + ("" if path.exists() else f" ({path} does not exist)")
        )
    return load_image_folder(path, data_dir, quiet=quiet)


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
