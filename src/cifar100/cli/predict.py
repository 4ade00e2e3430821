"""`cifar100 predict MODEL PATH...` (or `--pretrained PATH...`): top-k classes for each of your images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Classify your own images with a trained model. PATH can be image files or folders (searched
recursively) of anything Pillow reads: JPEG, PNG (also 16-bit, palette, with alpha), WebP,
BMP, GIF (first frame), grayscale. Each image is centre-cropped to a square and downscaled
to 32x32 with a good filter (--no-crop squashes the whole image instead; a model trained on
squashed images, center_crop=false, squashes by default).

When an image sits in a folder named after one of the model's classes (photos/apple/x.jpg),
the folder is taken as its true label: each such image is PASSED or FAILED and the accuracy
is reported. A file that cannot be read is reported and skipped.
"""


def register(subparsers) -> None:
    from cifar100.cli.model_args import MODEL_HELP, add_model_arguments
    from cifar100.devices import DEVICE_CHOICES

    p = subparsers.add_parser(
        "predict",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="cifar100 predict [options] (MODEL | --pretrained) PATH [PATH ...]",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("paths", metavar="PATH", nargs="+", help="image files and/or folders of images")
    add_model_arguments(p)
    p.add_argument("--top-k", type=int, default=5, help="how many classes to show per image (default: 5)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    fmt.add_argument("--csv", action="store_true", help="print CSV rows instead of a table")
    p.add_argument("--no-crop", dest="crop", action="store_false", default=None,
                   help="squash the whole image to a square instead of cropping its centre "
                   "(the default for a model trained with center_crop=false)")
    p.add_argument("--gallery", metavar="PNG", help="also draw a gallery of the images, their 32x32 view and top-3 bars")
    p.add_argument("--gallery-max", type=int, default=48, metavar="N",
                   help="at most this many images in the gallery, the first ones found (default: 48)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    p.add_argument("--device", default="auto", metavar="{" + ",".join(DEVICE_CHOICES) + "}",
                   help="where to run the model (default: auto: cuda, then mps, then cpu)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="refuse images with more pixels than this (default: 50,000,000)")
    p.set_defaults(func=run)


def run(args) -> int:
    from cifar100.data.images import DEFAULT_MAX_PIXELS
    from cifar100.errors import ConfigError, ImageError

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.gallery_max < 1:
        raise ConfigError(f"--gallery-max must be at least 1, got {args.gallery_max}")
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    if max_pixels < 1:
        raise ConfigError(f"--max-pixels must be positive, got {max_pixels}")

    # torch comes in with these; a mistyped option above is answered before that cost.
    from cifar100.devices import resolve_device
    from cifar100.inference import load_model
    from cifar100.app.predict import (
        CsvWriter,
        Summary,
        TableWriter,
        find_images,
        gallery_arrays,
        label_from_folder,
        predict_files,
        prediction_record,
        write_json_report,
    )

    model = load_model(args.model, which=args.which, device=resolve_device(args.device), sha256=args.sha256)
    if args.crop is None:  # photos prepared as the model's training images were
        args.crop = model.center_crop
    files, missing = find_images(args.paths)
    if not files:
        if len(missing) == len(args.paths):
            gone = ", ".join(str(item.path) for item in missing)
            raise ImageError(f"{gone} {'does' if len(missing) == 1 else 'do'} not exist")
        where = ", ".join(str(p) for p in args.paths if Path(p).exists())
        raise ImageError(f"no image files found in {where} (folders are searched for image suffixes: .jpg, .png, ...)")
    top_k = min(args.top_k, len(model.classes))
    summary = Summary(top_k=top_k)
    out = sys.stdout
    if args.csv:
        writer = CsvWriter(out, top_k)
    elif args.json:
        writer = None  # one document at the end
    else:
        labelled = any(label_from_folder(p, model.classes) for p in files)
        writer = TableWriter(out, files, model.classes, top_k, labelled=labelled)

    records: list[dict] = []  # JSON is one document, so its records wait; they hold no pixels
    gallery: list = []
    for item in missing:
        summary.add(item)
        records.append(prediction_record(item))
        if writer:
            writer.write(item)
    for item in predict_files(
        model,
        files,
        top_k=top_k,
        crop=args.crop,
        batch_size=args.batch_size,
        max_pixels=max_pixels,
        thumbnails_for=args.gallery_max if args.gallery else 0,
    ):
        summary.add(item)
        if writer:
            writer.write(item)
        if args.json:
            records.append(prediction_record(item))
        if getattr(item, "thumbnail", None) is not None:
            gallery.append(item)
    if args.json:
        write_json_report(out, model, records, summary, args.crop)
    out.flush()
    print(summary.describe(), file=sys.stderr if (args.json or args.csv) else sys.stdout)

    if args.gallery and gallery:
        from cifar100.evaluation.plots import plot_prediction_gallery_user

        path = plot_prediction_gallery_user(*gallery_arrays(gallery), args.gallery)
        note = f" (the first {len(gallery)} of {summary.classified})" if len(gallery) < summary.classified else ""
        print(f"gallery of {len(gallery)} image(s){note} written to {path}", file=sys.stderr)
    # Some images classified is success; nothing classifiable at all is a failure to report.
    return 0 if summary.classified else 1
