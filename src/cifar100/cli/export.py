"""`cifar100 export MODEL --format onnx|torchscript|safetensors [--out PATH]`."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Export a trained model to ONNX or TorchScript with its normalisation built in: it takes
float32 RGB images, NCHW, on the 0..1 scale (pixel / 255), input name "image", and returns
logits ("logits"). A JSON sidecar beside it (model.onnx.json for model.onnx, model.torchscript.pt.json
for model.torchscript.pt) lists the class names, input size and layout, and the mean/std inside the model.

Before anything is written, the export is run (onnxruntime, or torch.jit for TorchScript) on
real images beside PyTorch: the top-1 class must match on every image (float16 safetensors
weights: on all but 1% of them), and the largest probability difference is reported. The
images are --check-images if given, else the test images of the dataset the model was trained
on when it is on this machine.

--format safetensors writes the weights to share instead: a folder (--out) with
model.safetensors (no optimizer state, no pickle), config.json (architecture, classes,
normalisation, temperature, provenance, the weights' sha256, and their accuracy on the whole
test set when it is on this machine) and a README.md model card. `predict`, `serve`, `export`
and `cifar100.load_model` take that folder, or an http(s) URL to it (with --sha256 to pin it).
"""


def register(subparsers) -> None:
    from cifar100.cli.model_args import MODEL_HELP, add_model_arguments
    from cifar100.weights import DTYPES

    p = subparsers.add_parser(
        "export",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="cifar100 export [options] (MODEL | --pretrained)",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--format", choices=["onnx", "torchscript", "safetensors"], default="onnx", help="default: onnx")
    p.add_argument("--out", metavar="PATH",
                   help="output file, or folder for safetensors (default: RUN/export/model.onnx or RUN/export/weights/, "
                   "or beside the checkpoint file)")
    p.add_argument("--dtype", choices=DTYPES, default=DTYPES[0],
                   help="safetensors only: how the weights are stored (float16 halves the file; its accuracy is measured)")
    p.add_argument("--check-images", nargs="+", metavar="PATH",
                   help="image files or folders to check the export on (default: the run's test images)")
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from cifar100.app.export import export_run
    from cifar100.errors import ConfigError


    if args.dtype != "float32" and args.format != "safetensors":
        raise ConfigError(f"--dtype is for --format safetensors; {args.format} exports are float32")
    result = export_run(args.model, args.format, args.out, which=args.which, check_images=args.check_images,
                        dtype=args.dtype, sha256=args.sha256)
    if args.format == "safetensors":
        weights = result.path / "model.safetensors"
        test = result.test_line()
        print(f"wrote {result.path}/: model.safetensors ({weights.stat().st_size / 1e6:.2f} MB), config.json, README.md{test}")
    else:
        print(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.2f} MB) and {result.sidecar}")
    print(f"checked against PyTorch: {result.parity.describe()}")
    return 0
