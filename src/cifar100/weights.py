"""Weights to share: a folder with `model.safetensors` (the inference weights only: no optimizer
state, and no pickle, so loading it cannot run code) and `config.json` (architecture, classes,
normalisation, temperature, where the weights came from, and model.safetensors's sha256).

    <folder>/model.safetensors   the network's state_dict (float32, or float16 to halve it)
    <folder>/config.json         {"format": "cifar100-weights", "format_version": 1,
                                  "weights": {"file", "sha256", "bytes", "dtype"},
                                  "model": {"arch", "kwargs"}, "classes", "coarse_classes",
                                  "fine_to_coarse", "normalization": {"mean", "std"},
                                  "temperature", "dataset", "epoch", "metrics", "test", "source"}
    <folder>/README.md           a model card written from config.json (for people, not read back)

`cifar100 export --format safetensors` writes one (app/export.py); `read_weights_folder` turns
one back into the same payload a checkpoint holds, so everything that loads a checkpoint loads
these too. `fetch_weights_folder` brings one from a URL into the cache: config.json first, then
model.safetensors through the resumable download, verified against the sha256 the user gives
(else the one config.json records, which catches a damaged transfer but not a replaced folder).
A given sha256 pins the weights; config.json (class names, normalisation) travels with them
and is checked only to name the same weights.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cifar100.errors import CheckpointError, ConfigError, DownloadError
from cifar100.fileio import atomic_write_bytes, write_json

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
FORMAT = "cifar100-weights"
FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
MAX_CONFIG_BYTES = 4 << 20  # a config.json lists classes and numbers: never megabytes
URL_SCHEMES = ("http://", "https://")

# The payload keys a weights folder carries over from a checkpoint (checkpoint.py).
PAYLOAD_KEYS = ("model", "classes", "coarse_classes", "fine_to_coarse", "dataset", "normalization",
                "epoch", "metrics", "temperature")


def is_weights_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def is_url(source: str | Path) -> bool:
    return isinstance(source, str) and source.lower().startswith(URL_SCHEMES)


def sha256_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalise_sha256(sha256: str) -> str:
    """A sha256 as the user gave it -> 64 lowercase hex digits, or a ConfigError for a typo."""
    value = str(sha256).strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ConfigError(f"a sha256 is 64 hex digits, got {sha256!r}")
    return value


# --- writing ----------------------------------------------------------------------------------


def weights_bytes(state_dict: dict[str, Any], dtype: str = "float32") -> bytes:
    """The safetensors file of a state_dict; floating-point tensors stored as `dtype`
    (integer buffers, such as BatchNorm's step count, stay as they are)."""
    import torch
    from safetensors.torch import save

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    target = getattr(torch, dtype)
    tensors = {
        name: (t.detach().to("cpu", target) if t.is_floating_point() else t.detach().cpu()).contiguous().clone()
        for name, t in state_dict.items()
    }
    return save(tensors, metadata={"format": FORMAT})


def weights_config(payload: dict[str, Any], data: bytes, dtype: str, *, test: dict[str, Any] | None,
                   source: dict[str, Any]) -> dict[str, Any]:
    """config.json for the weights file `data` of a checkpoint-shaped `payload`."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256_of_bytes(data), "bytes": len(data), "dtype": dtype},
        **{key: payload.get(key) for key in PAYLOAD_KEYS},
        # Measured on these very weights (as stored, float16 included), when the test set was at hand.
        "test": test,
        "source": source,
    }


def check_output_folder(folder: str | Path) -> Path:
    """Where a weights folder may be written: a new or empty folder, or an earlier weights
    folder (which it replaces). Anything else, a run folder or a project, would lose files."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} exists and is not a folder: a safetensors export is a folder (--out DIR)")
    if folder.is_dir() and any(folder.iterdir()) and not is_weights_folder(folder):
        present = sorted(p.name for p in folder.iterdir())
        shown = ", ".join(present[:5]) + (f" and {len(present) - 5} more" if len(present) > 5 else "")
        raise ConfigError(
            f"{folder} already holds other files ({shown}): a safetensors export goes into a new or empty "
            f"folder, or replaces an earlier export; choose another --out"
        )
    return folder


def write_weights_folder(folder: str | Path, data: bytes, config: dict[str, Any]) -> Path:
    """Write model.safetensors, then config.json (whose sha256 names it), then the model card;
    each atomically. A folder whose config.json is older than its weights fails verification
    rather than loading mismatched files."""
    folder = check_output_folder(folder)
    atomic_write_bytes(folder / WEIGHTS_FILE, data)
    write_json(folder / CONFIG_FILE, config)
    atomic_write_bytes(folder / CARD_FILE, model_card(config).encode("utf-8"))
    return folder


def model_card(config: dict[str, Any]) -> str:
    """A short README for the folder, every number read from config.json."""
    model, source, test = config.get("model") or {}, config.get("source") or {}, config.get("test")
    weights, dataset = config["weights"], config.get("dataset") or {}
    lines = [
        f"# {source.get('run') or 'cifar100 model'}",
        "",
        (f"A `{model.get('arch')}` network ({json.dumps(model.get('kwargs'))}) trained by the cifar100 tool on "
         f"`{dataset.get('name') or dataset.get('spec')}` ({len(config.get('classes') or [])} classes)."),
        "",
        f"- weights: `{weights['file']}`, {weights['dtype']}, {weights['bytes']:,} bytes, sha256 `{weights['sha256']}`",
    ]
    if test:
        top5 = f", top-5 {test['top5']:.2%}" if test.get("top5") is not None else ""
        lines.append(f"- test accuracy of these weights: top-1 {test['top1']:.2%}{top5} on {test['images']:,} "
                     f"test images of `{test['dataset']}`")
    for key, label in (("preset", "preset"), ("seed", "seed"), ("command", "command"), ("commit", "commit"),
                       ("device", "trained on"), ("started", "started"), ("cifar100_version", "cifar100 version")):
        if source.get(key) not in (None, ""):
            lines.append(f"- {label}: `{source[key]}`")
    lines += [
        "",
        ("Use it with `cifar100 predict FOLDER photo.jpg`, `cifar100 serve FOLDER` or "
         "`cifar100.load_model(\"FOLDER\")`; `config.json` holds the class names, the normalisation "
         "and the temperature the logits are divided by."),
        "",
    ]
    return "\n".join(lines)


# --- reading ----------------------------------------------------------------------------------


def read_weights_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable weights config ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cifar100 weights config (no \"format\": \"{FORMAT}\")")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has weights format version {config.get('format_version')}; this cifar100 reads version {FORMAT_VERSION}"
        )
    return config


def read_weights_folder(folder: str | Path, sha256: str | None = None) -> dict[str, Any]:
    """The checkpoint-shaped payload of a weights folder, after checking model.safetensors
    against the sha256 in config.json and, if given, against `sha256`. Floating-point weights
    come back as float32 whatever they were stored as."""
    folder = Path(folder)
    config, data = _checked_files(folder, sha256)
    return payload_of(config, data, label=str(folder / WEIGHTS_FILE))


def _checked_files(folder: Path, sha256: str | None) -> tuple[dict[str, Any], bytes]:
    """config.json and the bytes of model.safetensors, once they hash as config.json records
    (and as `sha256`, if given); else a CheckpointError."""
    config = read_weights_config(folder)
    data = (folder / WEIGHTS_FILE).read_bytes()
    actual = sha256_of_bytes(data)
    recorded = str((config.get("weights") or {}).get("sha256", "")).lower()
    if actual != recorded:
        raise CheckpointError(
            f"{folder / WEIGHTS_FILE} has sha256 {actual}, but {CONFIG_FILE} records {recorded or 'none'}: "
            f"the file is damaged or does not belong to this config"
        )
    if sha256 is not None and actual != normalise_sha256(sha256):
        raise CheckpointError(f"{folder / WEIGHTS_FILE} has sha256 {actual}, not the expected {sha256}")
    return config, data


def payload_of(config: dict[str, Any], data: bytes, label: str = WEIGHTS_FILE) -> dict[str, Any]:
    """The checkpoint-shaped payload of a weights config and its safetensors bytes."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{label} is not a readable safetensors file ({exc})") from None
    weights = {name: t.float() if t.is_floating_point() else t for name, t in tensors.items()}
    payload = {key: config.get(key) for key in PAYLOAD_KEYS}
    payload.update(weights=weights, weights_config=config)
    if payload["temperature"] is None:
        payload["temperature"] = 1.0
    return payload


# --- fetching ---------------------------------------------------------------------------------


def folder_url(url: str) -> str:
    """The folder a URL names: itself, or the folder of a model.safetensors / config.json URL."""
    base = url.split("#", 1)[0].split("?", 1)[0]
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if base.endswith("/" + name):
            return base[: -len(name)]
    return base.rstrip("/") + "/"


def fetch_weights_folder(url: str, cache_dir: str | Path, sha256: str | None = None, *, quiet: bool = False) -> Path:
    """A weights folder at `url`, downloaded into `cache_dir/models/` (or found there from an
    earlier fetch) and verified. `sha256`: what model.safetensors must hash to."""
    base = folder_url(url)
    key = hashlib.sha256(base.encode()).hexdigest()[:16]
    folder = Path(cache_dir).expanduser() / "models" / f"{Path(base.rstrip('/')).name or 'weights'}-{key}"
    with _one_fetch_at_a_time(folder):
        return _fetch_into(folder, base, sha256, quiet)


def _fetch_into(folder: Path, base: str, sha256: str | None, quiet: bool) -> Path:
    from cifar100.data.download import download_file, fetch_small_file

    if sha256 is not None:
        sha256 = normalise_sha256(sha256)
        if _verified(folder, sha256):
            return folder  # the pinned version is here already: no request at all
    try:
        config_bytes = fetch_small_file(base + CONFIG_FILE, MAX_CONFIG_BYTES)
    except DownloadError as exc:
        if sha256 is None and _verified(folder, None):
            return folder  # fetched before: usable offline
        raise DownloadError(f"{exc} (a weights URL names a folder: .../, .../{CONFIG_FILE} or .../{WEIGHTS_FILE})") from None
    try:
        config = json.loads(config_bytes)
        recorded = normalise_sha256(config["weights"]["sha256"])
        size = int(config["weights"]["bytes"])
    except (ValueError, KeyError, TypeError, ConfigError) as exc:
        raise DownloadError(f"{base + CONFIG_FILE} is not a cifar100 weights config ({exc})") from None
    if sha256 is not None and recorded != sha256:
        raise DownloadError(
            f"{base + CONFIG_FILE} describes weights with sha256 {recorded}, not the expected {sha256}; nothing was downloaded"
        )
    weights = folder / WEIGHTS_FILE
    if not (weights.is_file() and sha256_of_bytes(weights.read_bytes()) == recorded):
        # Into weights.part, renamed over the old file only once verified: a failed download
        # leaves the cached copy as it was.
        download_file(base + WEIGHTS_FILE, weights, recorded, algorithm="sha256", size=size, max_bytes=size,
                      quiet=quiet)
    atomic_write_bytes(folder / CONFIG_FILE, config_bytes)
    return folder


@contextmanager
def _one_fetch_at_a_time(folder: Path):
    """Processes fetching into the same cache folder take turns (torchrun starts one per GPU,
    each reading --init-from): the first downloads, the others then find its verified copy."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows has no flock; there a concurrent fetch repeats the download
        yield
        return
    with open(folder / ".fetching", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _verified(folder: Path, sha256: str | None) -> bool:
    """A cached folder whose weights hash as they should (parsing them is the reader's job)."""
    if not is_weights_folder(folder):
        return False
    try:
        _checked_files(folder, sha256)
    except CheckpointError:
        return False
    return True
