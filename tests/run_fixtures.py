"""Run fixtures (a pytest plugin, loaded by conftest.py), session-scoped:

- `synthetic_folder`: an image folder (`train/<class>/*.png`, `test/<class>/*.png`) of an easy
  4-class task (each class its own colour and stripe pattern, plus noise): learnable in seconds.
- `cifar10_small_folder`: 200 train and 50 test real CIFAR-10 JPEGs per class, extracted from
  ../shared/data/cifar10-jpeg.tar.gz into an image folder.
- `synthetic_run`: a real run folder trained by the real command on `synthetic_folder` (no
  ../shared needed). Treat it as read-only.
- `smoke_run`: a real run folder, made by the real command
  `cifar100 train --preset smoke --dataset <cifar10_small_folder> --epochs 3` in a subprocess.
  Treat it as read-only (copy it to modify it).
- `run_cli(*args, timeout=...)`: runs `python -m cifar100 ARGS` and returns the CompletedProcess.
- `serve_process(run, *args)`: `cifar100 serve RUN --port 0 ARGS` in its own process, as a context
  manager giving (base URL, log lines so far, process); stopped on exit.
"""

from __future__ import annotations

import contextlib
import queue
import re
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SYNTHETIC_CLASSES = ["red", "green", "blue", "stripes"]


def run_cli(*args: str, timeout: float = 600, cwd: str | Path | None = None, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "cifar100", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
    )


@contextlib.contextmanager
def serve_process(run: Path, *args: str) -> Iterator[tuple[str, list[str], subprocess.Popen]]:
    """(base URL, log lines so far, process) of `cifar100 serve RUN --port 0 ARGS`: the OS picks
    a free port and uvicorn names it, so two test sessions never race for one."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar100", "serve", str(run), "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    log, base, deadline = [], None, time.monotonic() + 120
    try:
        while base is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail("cifar100 serve did not start within 120 s:\n" + "".join(log))
            log.append(line)
            match = re.search(r"Uvicorn running on (http://[\d.]+:\d+)", line)
            if match:
                base = match.group(1)
            elif proc.poll() is not None:
                pytest.fail("cifar100 serve exited:\n" + "".join(log))
        yield base, log, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def synthetic_image(cls: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.integers(0, 90, (32, 32, 3)).astype(np.int32)
    if cls < 3:
        x[..., cls] += 140
    else:
        x[::4] += 140  # horizontal stripes in every channel
    return x.clip(0, 255).astype(np.uint8)


def write_synthetic_folder(root: Path, train_per_class: int, test_per_class: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for cls, name in enumerate(SYNTHETIC_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(synthetic_image(cls, rng)).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory) -> Path:
    return write_synthetic_folder(tmp_path_factory.mktemp("synthetic"), train_per_class=150, test_per_class=40)


@pytest.fixture(scope="session")
def cifar10_small_folder(tmp_path_factory, cifar10_jpeg) -> Path:
    root = tmp_path_factory.mktemp("cifar10-small")
    quota = {"train": 200, "test": 50}
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(cifar10_jpeg) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-3] not in quota:
                continue
            key = (parts[-3], parts[-2])
            if taken.get(key, 0) >= quota[key[0]]:
                continue
            taken[key] = taken.get(key, 0) + 1
            target = root / key[0] / key[1] / parts[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    return root


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory, synthetic_folder) -> Path:
    work = tmp_path_factory.mktemp("synthetic-run")
    result = run_cli("train", "--preset", "smoke", "--dataset", synthetic_folder, "--data-dir", work / "cache",
                     "--out", work / "run", "--epochs", "3", "--quiet")
    assert result.returncode == 0, result.stderr
    return work / "run"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, cifar10_small_folder) -> Path:
    work = tmp_path_factory.mktemp("smoke-run")
    run_dir = work / "run"
    result = run_cli(
        "train", "--preset", "smoke", "--dataset", cifar10_small_folder, "--data-dir", work / "cache",
        "--out", run_dir, "--epochs", "3", "--quiet",
    )
    assert result.returncode == 0, result.stderr
    return run_dir
