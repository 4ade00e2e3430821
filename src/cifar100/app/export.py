"""Export a trained model to ONNX or TorchScript, with its normalisation built in, plus a JSON
sidecar that says everything another program needs to feed it: class names, input name,
layout, scale and size, and the mean/std already applied inside.

The exported bytes are checked before anything is written: the exported model and PyTorch
must give the same top-1 class on every check image (real images whenever we can find
them), and the largest probability difference is reported. A model that fails the check is
not written.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cifar100 import __version__
from cifar100.errors import Cifar100Error
from cifar100.fileio import atomic_write_bytes, write_json
from cifar100.inference import LoadedModel
from cifar100.evaluation.metrics import softmax

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "logits"
IMAGE_SIZE = 32
PREPROCESSING = (
    "decode to RGB (alpha composited on white), centre-crop to a square, Lanczos downscale to "
    "32x32, pixel values / 255; the mean/std normalisation is inside the model"
)


class ExportParityError(Cifar100Error):
    """The exported model disagrees with PyTorch; nothing was written."""


@dataclass
class ParityReport:
    images: int
    source: str  # what the check images were
    top1_agreement: int  # images where both give the same top-1 class
    max_probability_difference: float

    @property
    def passed(self) -> bool:
        return self.top1_agreement == self.images

    def describe(self) -> str:
        return (
            f"same top-1 class on {self.top1_agreement}/{self.images} images ({self.source}); "
            f"max probability difference {self.max_probability_difference:.2e}"
        )


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    parity: ParityReport


def default_output(model: LoadedModel, fmt: str) -> Path:
    """runs/<name>/export/model.onnx for a run folder; beside the file for a checkpoint."""
    if model.run_dir is not None:
        return model.run_dir / "export" / f"model{FORMATS[fmt]}"
    return model.checkpoint_path.with_name(model.checkpoint_path.stem + FORMATS[fmt])


def sidecar_path(model_path: Path) -> Path:
    # model.onnx -> model.onnx.json: an ONNX and a TorchScript export can sit side by side.
    return model_path.with_name(model_path.name + ".json")


def _example_input() -> torch.Tensor:
    return torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))


def onnx_bytes(classifier: torch.nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """The classifier as an ONNX model: input "image" float32 (batch, 3, 32, 32) on 0..1,
    output "logits" (batch, classes); the batch axis is dynamic."""
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter is the one that needs no onnxscript; it warns that
        # a newer one exists.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            classifier,
            (_example_input(),),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=ONNX_OPSET,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def torchscript_bytes(classifier: torch.nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """The classifier traced to TorchScript (the network has no data-dependent control flow,
    so a trace is exact); the sidecar JSON also travels inside as the extra file
    "cifar100.json"."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(classifier, _example_input())
        extra = {"cifar100.json": json.dumps(metadata or {})}
        torch.jit.save(traced, buffer, _extra_files=extra)
    return buffer.getvalue()


def _as_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 32, 32, 3) -> float32 (N, 3, 32, 32) on 0..1: the exported input contract."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def onnx_probabilities(model: bytes | str | Path, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities from an ONNX model (bytes or a path) run by onnxruntime on CPU."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    out = [
        session.run([OUTPUT_NAME], {INPUT_NAME: _as_model_input(images[i : i + batch_size])})[0]
        for i in range(0, len(images), batch_size)
    ]
    return softmax(np.concatenate(out))


def torchscript_probabilities(model: bytes | str | Path, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(model) if isinstance(model, bytes) else str(model), map_location="cpu")
    module.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            out.append(module(torch.from_numpy(_as_model_input(images[i : i + batch_size]))).numpy())
    return softmax(np.concatenate(out))


RUNNERS: dict[str, Callable[[bytes, np.ndarray], np.ndarray]] = {
    "onnx": onnx_probabilities,
    "torchscript": torchscript_probabilities,
}


def check_parity(model: LoadedModel, exported: np.ndarray, images: np.ndarray, source: str) -> ParityReport:
    """Compare the exported model's probabilities `exported` with PyTorch's on `images`."""
    reference = model.probabilities(images).astype(np.float64)
    return ParityReport(
        images=len(images),
        source=source,
        top1_agreement=int((reference.argmax(1) == exported.argmax(1)).sum()),
        max_probability_difference=float(np.abs(reference - exported).max()) if len(images) else 0.0,
    )


def describe_model(model: LoadedModel, fmt: str, file_name: str) -> dict:
    """The sidecar: what a program needs to feed the exported model and read its output."""
    return {
        "format": fmt,
        "file": file_name,
        **({"onnx_opset": ONNX_OPSET} if fmt == "onnx" else {}),
        "classes": list(model.classes),
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, IMAGE_SIZE, IMAGE_SIZE],
            "dtype": "float32",
            "layout": "NCHW",
            "channels": "RGB",
            "scale": "0..1 (uint8 pixel / 255)",
            "size": [IMAGE_SIZE, IMAGE_SIZE],
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", len(model.classes)],
            "meaning": "logits: softmax over the last axis gives class probabilities (calibrated: the "
                       "temperature below is built in)",
        },
        "normalization": {"mean": model.mean, "std": model.std, "built_in": True},
        # Fitted on the run's validation split (1.0: a run without one, left uncalibrated).
        "calibration": {"temperature": model.temperature, "built_in": True},
        "preprocessing": PREPROCESSING,
        "source": {
            "checkpoint": str(model.checkpoint_path),
            "model": model.model_config,
            "epoch": model.epoch,
            "metrics": model.metrics,
            "dataset": model.dataset,
        },
        "cifar100_version": __version__,
    }


def export_model(
    model: LoadedModel,
    fmt: str,
    out: str | Path | None,
    check_images: np.ndarray,
    check_source: str,
) -> ExportResult:
    """Export, check against PyTorch on `check_images` (uint8 (N, 32, 32, 3)), and only then
    write the model file and its sidecar atomically."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    path = Path(out) if out is not None else default_output(model, fmt)
    if path.is_dir():
        path = path / f"model{FORMATS[fmt]}"
    classifier = model.classifier.to("cpu").eval()
    description = describe_model(model, fmt, path.name)
    if fmt == "onnx":
        metadata = {
            "cifar100.classes": json.dumps(description["classes"]),
            "cifar100.input": json.dumps(description["input"]),
            "cifar100.normalization": json.dumps(description["normalization"]),
        }
        data = onnx_bytes(classifier, metadata)
    else:
        data = torchscript_bytes(classifier, {k: description[k] for k in ("classes", "input", "output", "normalization")})

    parity = check_parity(model, RUNNERS[fmt](data, check_images), check_images, check_source)
    if not parity.passed:
        raise ExportParityError(
            f"the {fmt} export disagrees with PyTorch: {parity.describe()}; nothing was written"
        )
    description["parity"] = {"runtime": "onnxruntime" if fmt == "onnx" else "torch.jit", **asdict(parity)}
    atomic_write_bytes(path, data)
    sidecar = write_json(sidecar_path(path), description)
    return ExportResult(path, sidecar, parity)


# ---- images for the parity check ------------------------------------------------------------

CHECK_IMAGES = 256


def check_images_from_files(paths: list[str], count: int = CHECK_IMAGES) -> tuple[np.ndarray, str]:
    """The first `count` readable images under `paths`, preprocessed as `predict` does."""
    from cifar100.errors import ImageError
    from cifar100.app.predict import decode_files, find_images

    files, _ = find_images(paths)
    images = []
    for _, decoded in decode_files(files):
        if not isinstance(decoded, ImageError):
            images.append(decoded[1])
            if len(images) == count:
                break
    if not images:
        raise ImageError(f"no readable images in {', '.join(map(str, paths))} to check the export on")
    return np.stack(images), f"{len(images)} images from {', '.join(map(str, paths))}"


def check_images_from_dataset(model: LoadedModel, count: int = CHECK_IMAGES) -> tuple[np.ndarray, str] | None:
    """The first `count` test images of the dataset the model was trained on, when that
    dataset is on this machine (no download is attempted); None otherwise."""
    spec = model.dataset.get("spec")
    if not spec:
        return None
    from cifar100.data.sources import load_dataset
    from cifar100.runs import RunFolder

    data_dir = RunFolder(model.run_dir).data_dir() if model.run_dir is not None else None

    try:
        dataset = load_dataset(spec, data_dir, download=False, quiet=True)
    except (Cifar100Error, OSError):  # not on this machine (or not readable): no real images here
        return None
    if len(dataset.test) == 0:
        return None
    images = dataset.test.images[:count]
    return images, f"the first {len(images)} test images of {dataset.name}"


def noise_check_images(count: int = 64) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    return images, f"{count} random-noise images: no real images were at hand (pass --check-images PATH)"


def export_run(run_or_checkpoint: str | Path, fmt: str = "onnx", out: str | Path | None = None, *,
               which: str = "best", check_images: list[str] | None = None) -> ExportResult:
    """`cifar100 export`: the run's checkpoint exported and checked against PyTorch on
    `check_images` (paths), else the test images of its dataset when it is on this machine,
    else random noise."""
    from cifar100.inference import load_model

    model = load_model(run_or_checkpoint, which=which, device="cpu")
    if check_images:
        images, source = check_images_from_files(check_images)
    else:
        images, source = check_images_from_dataset(model) or noise_check_images()
    return export_model(model, fmt, out, images, source)
