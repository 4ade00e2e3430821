"""Every dataset source (CIFAR-100, CIFAR-10, an image folder or .tar.gz of one) by the name
the user gives it (`--dataset`), and where they are cached."""

from __future__ import annotations

import os
from pathlib import Path

from cifar100.data.cifar_archives import archive_spec, load_cifar
from cifar100.data.image_folder import is_image_folder_source, load_image_folder
from cifar100.data.types import Dataset
from cifar100.errors import ConfigError

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
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    name = str(spec).strip()
    if name.lower() in ("cifar100", "cifar10"):
        return load_cifar(archive_spec(name.lower()), data_dir, download=download, quiet=quiet)
    path = Path(name).expanduser()
    if not is_image_folder_source(path):
        raise ConfigError(
            f"unknown dataset {spec!r}: use cifar100, cifar10, or the path of an image folder "
            f"(train/<class>/*, test/<class>/*) or of a .tar.gz of one"
            + ("" if path.exists() else f" ({path} does not exist)")
        )
    return load_image_folder(path, data_dir, quiet=quiet)
