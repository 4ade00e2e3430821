"""`cifar100 export RUN_OR_CHECKPOINT --format onnx|torchscript [--out PATH]`."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Export a trained model to ONNX or TorchScript with its normalisation built in: it takes
float32 RGB images, NCHW, on the 0..1 scale (pixel / 255), input name "image", and returns
logits ("logits"). A JSON sidecar beside it (model.onnx.json for model.onnx, model.torchscript.pt.json
for model.torchscript.pt) lists the class names, input size and layout, and the mean/std inside the model.

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
    from cifar100.app.export import export_run

    result = export_run(args.run, args.format, args.out, which=args.which, check_images=args.check_images)
    print(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.2f} MB) and {result.sidecar}")
    print(f"checked against PyTorch: {result.parity.describe()}")
    return 0
