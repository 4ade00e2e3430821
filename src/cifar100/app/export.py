"""Export a trained model to ONNX or TorchScript, with its normalisation built in, plus a JSON
sidecar that says everything another program needs to feed it: class names, input name,
layout, scale and size, and the mean/std already applied inside. Or export its weights to
share (weights.py): a folder with model.safetensors, config.json (with the weights' sha256 and
their test accuracy, measured on the stored weights) and a model card, which this tool loads
wherever it takes a run folder.

The exported bytes are checked before anything is written: the exported model and PyTorch
must give the same top-1 class on every check image (real images whenever we can find
them), and the largest probability difference is reported. A model that fails the check is
not written.
"""

from __future__ import annotations

import dataclasses
import io
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cifar100 import __version__
from cifar100.errors import Cifar100Error, ConfigError
from cifar100.fileio import atomic_write_bytes, write_json
from cifar100.inference import LoadedModel
from cifar100.evaluation.metrics import softmax, topk_accuracy

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ""}  # safetensors: a folder
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
    # Weights stored as float16 are rounded: a near tie may flip on one image in a hundred.
    allowed_disagreements: int = 0

    @property
    def passed(self) -> bool:
        return self.images - self.top1_agreement <= self.allowed_disagreements

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
    test: dict | None = None  # safetensors: the stored weights' test accuracy, when measured

    def test_line(self) -> str:
        if not self.test:
            return "; no test set on this machine to measure the weights on"
        return f"; test top-1 of the stored weights {self.test['top1']:.2%} on {self.test['images']:,} images of {self.test['dataset']}"


def default_output(model: LoadedModel, fmt: str) -> Path:
    """runs/<name>/export/model.onnx (or export/weights/ for safetensors) for a run folder;
    otherwise where `LoadedModel.derived_path` puts things made from a model."""
    suffix = "-weights" if fmt == "safetensors" else FORMATS[fmt]
    if model.run_dir is not None:
        return model.run_dir / "export" / ("weights" if fmt == "safetensors" else f"model{suffix}")
    return model.derived_path(suffix)


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


def check_parity(model: LoadedModel, exported: np.ndarray, images: np.ndarray, source: str,
                 allowed_disagreements: int = 0) -> ParityReport:
    """Compare the exported model's probabilities `exported` with PyTorch's on `images`."""
    reference = model.probabilities(images).astype(np.float64)
    return ParityReport(
        images=len(images),
        source=source,
        top1_agreement=int((reference.argmax(1) == exported.argmax(1)).sum()),
        max_probability_difference=float(np.abs(reference - exported).max()) if len(images) else 0.0,
        allowed_disagreements=allowed_disagreements,
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
    if fmt not in FORMATS or fmt == "safetensors":
        raise ValueError(f"unknown export format {fmt!r}; choose from onnx, torchscript (safetensors: export_weights)")
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


def export_weights(
    model: LoadedModel,
    out: str | Path | None,
    check_images: np.ndarray,
    check_source: str,
    *,
    dtype: str = "float32",
    test: tuple[np.ndarray, np.ndarray, str] | None = None,
) -> ExportResult:
    """The weights to share (weights.py): stored as `dtype`, read back from the very bytes that
    will be written and checked against the model on `check_images`; their accuracy on `test`
    (images, labels, dataset name), when given, goes into config.json. Only then is the folder
    written."""
    from cifar100.inference import build_classifier
    from cifar100.weights import DTYPES, payload_of, weights_bytes, weights_config, write_weights_folder

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    from cifar100.weights import check_output_folder

    folder = check_output_folder(Path(out) if out is not None else default_output(model, "safetensors"))
    payload = {
        "model": model.model_config, "classes": list(model.classes), "coarse_classes": model.coarse_classes,
        # The data dir is a path on this machine: it means nothing where the weights are shared.
        "fine_to_coarse": model.fine_to_coarse, "dataset": {k: v for k, v in model.dataset.items() if k != "data_dir"},
        "normalization": {"mean": model.mean, "std": model.std}, "epoch": model.epoch,
        "metrics": model.metrics, "temperature": model.temperature,
    }
    data = weights_bytes(model.classifier.net.state_dict(), dtype)
    config = weights_config(payload, data, dtype, test=None, source=provenance(model))
    stored = dataclasses.replace(model, classifier=build_classifier(payload_of(config, data)))
    exported = stored.probabilities(check_images).astype(np.float64)
    parity = check_parity(model, exported, check_images, check_source,
                          allowed_disagreements=len(check_images) // 100 if dtype == "float16" else 0)
    if not parity.passed:
        raise ExportParityError(f"the {dtype} weights disagree with the model: {parity.describe()}; nothing was written")
    if test is not None:
        images, labels, name = test
        scores = stored.logits(images).numpy()
        config["test"] = {"dataset": name, "images": len(labels), "top1": topk_accuracy(scores, labels, 1),
                          "top5": topk_accuracy(scores, labels, 5) if len(model.classes) > 5 else None}
    config["parity"] = {"runtime": f"PyTorch, {dtype} weights read back", **asdict(parity)}
    write_weights_folder(folder, data, config)
    return ExportResult(folder, folder / "config.json", parity, config["test"])


def provenance(model: LoadedModel) -> dict:
    """Where the weights came from: the run's command, preset, seed and commit (config.json of
    the run), the checkpoint and its epoch; a weights folder passes its own on."""
    if model.weights_config is not None:
        return dict(model.weights_config.get("source") or {})
    source = {"checkpoint": model.checkpoint_path.name, "epoch": model.epoch, "cifar100_version": __version__}
    if model.run_dir is not None:
        from cifar100.runs import RunFolder

        config = RunFolder(model.run_dir).read_config() or {}
        source.update({"run": model.run_dir.name, **{key: config.get(key) for key in (
            "preset", "seed", "command", "commit", "device", "started")}})
        source["cifar100_version"] = (config.get("versions") or {}).get("cifar100", __version__)
    return source


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


def dataset_on_this_machine(model: LoadedModel):
    """The dataset the model was trained on, with its test split as the run had it, when it is
    on this machine (no download is attempted); None otherwise."""
    spec = model.dataset.get("spec")
    if not spec:
        return None
    from cifar100.data.sources import load_recorded_dataset
    from cifar100.runs import RunFolder

    data_dir = RunFolder(model.run_dir).data_dir() if model.run_dir is not None else None
    try:
        return load_recorded_dataset(model.dataset, data_dir, download=False, quiet=True)
    except (Cifar100Error, OSError):  # not on this machine (or not readable): no real images here
        return None


def noise_check_images(count: int = 64) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    return images, f"{count} random-noise images: no real images were at hand (pass --check-images PATH)"


def export_run(source: str | Path, fmt: str = "onnx", out: str | Path | None = None, *,
               which: str = "best", check_images: list[str] | None = None, dtype: str = "float32",
               sha256: str | None = None) -> ExportResult:
    """`cifar100 export`: the model at `source` (a run folder, checkpoint, weights folder or URL)
    exported and checked against PyTorch on `check_images` (paths), else the test images of
    its dataset when it is on this machine, else random noise. safetensors exports also record
    their accuracy on that whole test set."""
    from cifar100.inference import load_model

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    model = load_model(source, which=which, device="cpu", sha256=sha256)
    dataset = dataset_on_this_machine(model) if fmt == "safetensors" or not check_images else None
    if dataset is not None and list(dataset.classes) != list(model.classes):
        dataset = None  # not the classes the model knows: no accuracy to measure on it
    if check_images:
        images, check_source = check_images_from_files(check_images)
    elif dataset is not None and len(dataset.test):
        images = dataset.test.images[:CHECK_IMAGES]
        check_source = f"the first {len(images)} test images of {dataset.name}"
    else:
        images, check_source = noise_check_images()
    if fmt != "safetensors":
        return export_model(model, fmt, out, images, check_source)
    test = (dataset.test.images, dataset.test.labels, dataset.name) if dataset is not None and len(dataset.test) else None
    return export_weights(model, out, images, check_source, dtype=dtype, test=test)
