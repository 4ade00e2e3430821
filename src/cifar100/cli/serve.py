"""`cifar100 serve MODEL [--host 127.0.0.1] [--port 8000]` (or `--pretrained`)."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Serve a web page where you drop or pick a photo and see it, the 32x32 image the model
classifies, and the top-5 classes as bars; plus a JSON API: POST /predict (the image as the
multipart form field "file", or as the raw body), GET /classes, GET /health, and the OpenAPI
schema at /openapi.json. Uploads stay in memory and are never written to disk.

Listens on 127.0.0.1 (this machine only) unless --host says otherwise; --host 0.0.0.0 makes
the page reachable from other machines.
"""


def register(subparsers) -> None:
    from cifar100.cli.model_args import MODEL_HELP, add_model_arguments
    from cifar100.devices import DEVICE_CHOICES

    p = subparsers.add_parser(
        "serve",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="cifar100 serve [options] (MODEL | --pretrained)",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload in MiB (default: 10)")
    p.add_argument("--slots", type=int, default=None,
                   help="photos decoded and classified at once (default: one per core, at most 4)")
    p.add_argument("--queue", type=int, default=None,
                   help="photos held waiting for a slot; more than that are answered 503 at once (default: 16)")
    p.add_argument("--device", default="auto", metavar="{" + ",".join(DEVICE_CHOICES) + "}",
                   help="where to run the model (default: auto: cuda, then mps, then cpu)")
    p.set_defaults(func=run)


def run(args) -> int:
    import uvicorn

    from cifar100.app.serve import DEFAULT_QUEUE, DEFAULT_SLOTS, create_app
    from cifar100.devices import resolve_device
    from cifar100.errors import ConfigError
    from cifar100.inference import load_model


    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    slots = DEFAULT_SLOTS if args.slots is None else args.slots
    queue = DEFAULT_QUEUE if args.queue is None else args.queue
    if slots < 1:
        raise ConfigError(f"--slots must be at least 1, got {slots}")
    if queue < 0:
        raise ConfigError(f"--queue must be 0 or more, got {queue}")
    model = load_model(args.model, which=args.which, device=resolve_device(args.device), sha256=args.sha256)
    app = create_app(model, max_upload_bytes=int(args.max_upload_mb * 2**20), slots=slots, queue=queue)
    where = f"http://{args.host}:{args.port}/" if args.port else "a free port (uvicorn names it below)"
    print(f"serving {model.checkpoint_path} ({len(model.classes)} classes) on {where}; Ctrl-C stops", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", server_header=False)
    return 0
