"""`cifar100 export RUN_OR_CHECKPOINT --format onnx|torchscript [--out PATH]`."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Export a trained model to ONNX or TorchScript with its normalisation built in: it takes
float32 RGB images, NCHW, on the 0..1 scale (pixel / 255), input name "image", and returns
logits ("logits"). A JSON sidecar (MODEL.json) lists the class names, input size and layout,
and the mean/std inside the model.

Before anything is written, the export is run (onnxruntime, or torch.jit for TorchScript) on
real images beside PyTorch: the top-1 class must match on every image, and the largest
probability difference is reported. The images are --check-images if given, else the test
images of the dataset the model was trained on when it is on this machine.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run folder (uses checkpoints/best.pt) or a checkpoint file")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default: onnx")
    p.add_argument("--out", metavar="PATH",
                   help="output file (default: RUN/export/model.onnx, or beside the checkpoint file)")
    p.add_argument("--check-images", nargs="+", metavar="PATH",
                   help="image files or folders to check the export on (default: the run's test images)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="which checkpoint of a run folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from cifar100.export import (
        check_images_from_dataset,
        check_images_from_files,
        export_model,
        noise_check_images,
    )
    from cifar100.inference import load_model

    model = load_model(args.run, which=args.which, device="cpu")
    if args.check_images:
        images, source = check_images_from_files(args.check_images)
    else:
        images, source = check_images_from_dataset(model) or noise_check_images()
    result = export_model(model, args.format, args.out, images, source)
    print(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.2f} MB) and {result.sidecar}")
    print(f"checked against PyTorch: {result.parity.describe()}")
    return 0
