"""Inference speed on CPU: PyTorch eager vs onnxruntime, throughput (images/s at a batch size)
and single-image latency (median and 95th percentile of one-image calls, what `serve` pays
per request). The exported ONNX model is the one `cifar100 export` writes, normalisation
inside, and it is checked to agree with PyTorch before it is timed.

    python benchmarks/inference.py runs/<name>               # a trained run or checkpoint
    python benchmarks/inference.py --preset fast             # untrained weights of a preset's model
    python benchmarks/inference.py runs/<name> --threads 1 --batch-size 256

Speed does not depend on the weights, so a preset's untrained model times the same as a
trained one of that shape. Results depend on the CPU and thread count: quote them with both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hardware, print_table, run_main  # noqa: E402


def load(args):
    from cifar100.inference import Classifier, LoadedModel, load_model

    if args.run:
        return load_model(args.run, device="cpu")
    from cifar100.training.models import create_model
    from cifar100.training.presets import get_preset

    preset = get_preset(args.preset)
    net = create_model(preset.model, num_classes=100, **preset.model_kwargs)
    classifier = Classifier(net, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]).eval()
    return LoadedModel(
        classifier=classifier, classes=[f"class_{i}" for i in range(100)], coarse_classes=None,
        fine_to_coarse=None, dataset={}, checkpoint_path=f"(untrained {args.preset} preset)", run_dir=None, epoch=0,
        model_config={"arch": preset.model, "kwargs": dict(preset.model_kwargs)},
    )


def time_calls(fn, batches, seconds: float) -> list[float]:
    """Seconds per call, cycling through `batches` for at least `seconds` (after a warm-up)."""
    for batch in batches[:3]:
        fn(batch)
    times, start, i = [], time.perf_counter(), 0
    while time.perf_counter() - start < seconds or len(times) < 5:
        t0 = time.perf_counter()
        fn(batches[i % len(batches)])
        times.append(time.perf_counter() - t0)
        i += 1
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", help="run folder or checkpoint (default: an untrained --preset model)")
    parser.add_argument("--preset", default="cpu", help="preset whose model to time when no run is given (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=3.0, help="time spent on each measurement")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both runtimes (default: all)")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from cifar100.app.export import ONNX_OPSET, onnx_bytes, onnx_probabilities

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model = load(args)
    classifier = model.classifier.to("cpu").eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(args.batch_size, 64) * 2, 32, 32, 3), dtype=np.uint8)
    as_input = images.transpose(0, 3, 1, 2).astype(np.float32) / 255

    onnx_model = onnx_bytes(classifier)
    agree = (onnx_probabilities(onnx_model, images[:64]).argmax(1) == model.probabilities(images[:64]).argmax(1)).mean()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])

    def torch_run(x: np.ndarray):
        with torch.inference_mode():
            return classifier(torch.from_numpy(x))

    def onnx_run(x: np.ndarray):
        return session.run(None, {"image": x})

    b = args.batch_size
    batches = [as_input[i : i + b] for i in range(0, len(as_input) - b + 1, b)]
    singles = [as_input[i : i + 1] for i in range(64)]
    rows = []
    for name, fn in (("PyTorch (eager)", torch_run), (f"onnxruntime (opset {ONNX_OPSET})", onnx_run)):
        throughput = b / statistics.median(time_calls(fn, batches, args.seconds))
        latency = sorted(time_calls(fn, singles, args.seconds))
        p50, p95 = statistics.median(latency), latency[int(0.95 * (len(latency) - 1))]
        rows.append({
            "runtime": name,
            f"images/s (batch {b})": f"{throughput:,.0f}",
            "1-image latency p50": f"{p50 * 1e3:.2f} ms",
            "p95": f"{p95 * 1e3:.2f} ms",
        })

    print(f"model: {model.checkpoint_path} ({model.model_config['arch']}, "
          f"{sum(p.numel() for p in classifier.parameters()):,} parameters, {len(model.classes)} classes)")
    print(f"CPU: {hardware(torch.device('cpu'))}; torch {torch.__version__}, onnxruntime {ort.__version__}; "
          f"ONNX top-1 agreement with PyTorch: {100 * agree:.0f}%")
    print()
    print_table(rows, list(rows[0]))
    return 0


if __name__ == "__main__":
    run_main(main)
