"""Shared by the benchmark scripts: the device's measured matmul rate, the `--set` option, a
table printer, and error handling as in the CLI."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable

import torch

from cifar100.errors import Cifar100Error


def matmul_flops(device: torch.device, size: int = 2048, seconds: float = 2.0) -> float:
    """Sustained FLOP/s of a square matmul in the dtype training uses there (bf16 on CUDA,
    fp32 on CPU): the practical ceiling a conv net's training throughput is measured against."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        size = 8192
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
        if device.type == "cuda" and n % 10:
            continue
        sync(device)
    sync(device)
    return 2 * size**3 * n / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in columns))


def add_settings_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
        help="override a preset field in every run, as `cifar100 train --set` does "
        "(e.g. --set epochs=2 --set val_size=50 to check the script on a tiny dataset)",
    )


def settings_note(items: list[str]) -> str:
    """For a table's header line: a table made with overrides says so."""
    return "; with " + " ".join(f"--set {item}" for item in items) if items else ""


def seconds(value: float) -> str:
    """Times from a GPU speedrun (a few seconds) to a CPU run (tens of minutes) in one format."""
    return f"{value:.2f}s" if value < 10 else f"{value:.1f}s" if value < 100 else f"{value:.0f}s"


def run_main(main: Callable[[], object]) -> None:
    """Run a script's main as the CLI runs a command: a user's mistake (an unknown preset or
    setting, a missing dataset) ends in its message and exit status 2, not a traceback."""
    try:
        status = main()
    except Cifar100Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status if isinstance(status, int) else 0)
