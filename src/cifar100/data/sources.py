"""Every dataset source (CIFAR-100, CIFAR-10, an image folder or an archive of one) by the name
the user gives it (`--dataset`), and where they are cached; a run's dataset again, split as it was."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cifar100.data.cifar_archives import archive_spec, load_cifar
from cifar100.data.image_folder import ARCHIVE_NAMES, LAYOUTS, is_image_folder_source, load_image_folder
from cifar100.data.types import DEFAULT_CENTER_CROP, DEFAULT_SPLIT_SEED, DEFAULT_TEST_SIZE, Dataset
from cifar100.errors import ConfigError

DATA_DIR_ENV = "CIFAR100_DATA"


def default_data_dir() -> Path:
    """Where datasets are cached when --data-dir is not given: $CIFAR100_DATA, else
    ~/.cache/cifar100."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "cifar100"


def load_dataset(
    spec: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    quiet: bool = False,
    *,
    test_size: float = DEFAULT_TEST_SIZE,
    split_seed: int = DEFAULT_SPLIT_SEED,
    center_crop: bool = DEFAULT_CENTER_CROP,
) -> Dataset:
    """The dataset named by `spec`: "cifar100" (default), "cifar10", or the path of an image
    folder or an archive of one (see image_folder.py). Archives are downloaded (unless
    download=False), verified and extracted into `data_dir` on first use; image folders are
    decoded once and cached there. `test_size` and `split_seed` carve the test split of a
    `<class>/<image>` folder, `center_crop` says how an image folder's photos become 32x32; the
    CIFAR archives, which come split and 32x32, do not use them."""
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    name = str(spec).strip()
    if name.lower() in ("cifar100", "cifar10"):
        return load_cifar(archive_spec(name.lower()), data_dir, download=download, quiet=quiet)
    path = Path(name).expanduser()
    if not is_image_folder_source(path):
        raise ConfigError(
            f"unknown dataset {spec!r}: use cifar100, cifar10, or the path of an image folder "
            f"({LAYOUTS}) or of a {ARCHIVE_NAMES} of one"
            + ("" if path.exists() else f" ({path} does not exist)")
        )
    return load_image_folder(path, data_dir, quiet=quiet, test_size=test_size, split_seed=split_seed,
                             center_crop=center_crop)


def load_recorded_dataset(
    info: dict[str, Any], data_dir: str | Path | None, *, download: bool = True, quiet: bool = False
) -> Dataset:
    """The dataset a run was trained on, split as it was: `info` is the run's recorded dataset
    info (config.json's and the checkpoints' "dataset"), whose spec, test_size, split_seed and
    center_crop evaluation, export and resume all reload with, so they see the run's own test
    split. Runs from before these options were recorded used the defaults."""
    spec = info.get("spec")
    if not spec:
        raise ConfigError("the run's dataset info does not say which dataset it was trained on (no spec)")

    def recorded(key: str, default: Any) -> Any:
        value = info.get(key)
        return default if value is None else value

    return load_dataset(
        spec, data_dir, download=download, quiet=quiet,
        test_size=recorded("test_size", DEFAULT_TEST_SIZE),
        split_seed=int(recorded("split_seed", DEFAULT_SPLIT_SEED)),
        center_crop=bool(recorded("center_crop", DEFAULT_CENTER_CROP)),
    )
