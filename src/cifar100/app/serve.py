"""The web page and JSON API (`cifar100 serve`): a FastAPI app around one loaded model.

    GET  /            the page (static/index.html, app.js, style.css; nothing from elsewhere)
    POST /predict     an image -> top-k classes, and the 32x32 PNG the model saw
    GET  /health      liveness and which model is loaded
    GET  /classes     the class names, in the model's output order
    GET  /openapi.json

Uploads never touch the disk: the body is streamed into memory and refused as soon as it
passes the size limit (Starlette's own form parser would spool large files to a temporary
file, so multipart bodies are parsed here with python-multipart's streaming parser). The
type is decided by the bytes, never by the file name or the declared content type.

Memory is bounded under load: at most `slots` photos are decoded and classified at once (on
a pool of that many threads), at most `queue` more wait for a slot, and anything beyond that
is answered 503 with Retry-After at once. Large JPEGs are decoded at reduced size, and freed
memory goes back to the OS when a burst is over (memory.py).
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from cifar100 import __version__
from cifar100.errors import ImageError
from cifar100.data.images import DEFAULT_MAX_PIXELS, decode_image, to_model_input, too_many_pixels
from cifar100.inference import LoadedModel
from cifar100.memory import return_freed_memory, trim

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# A multipart body carries a few hundred bytes of boundaries and headers around the file.
MULTIPART_SLACK = 64 * 1024
# What a browser or phone produces; everything else Pillow could open (EPS, PSD, ICNS, ...)
# is refused, which also keeps rarely-exercised decoders away from strangers' bytes.
ALLOWED_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP", "GIF": "GIF", "TIFF": "TIFF"}
# Photos are decoded at no less than this on their shorter side (a 27-megapixel JPEG at 1/4
# scale): plenty for the 32x32 the model sees, and a photo up to twice this is decoded whole.
DECODE_SIDE = 1024
# One decode per core, at most 4 (decoding and the forward pass are CPU work), and a short queue.
DEFAULT_SLOTS = max(1, min(4, os.cpu_count() or 1))
DEFAULT_QUEUE = 16
QUEUE_WAIT_S = 30.0
# An admitted upload must arrive within this, or a few slow senders would hold every place.
UPLOAD_TIMEOUT_S = 30.0
# The page is self-contained: it may only load from this server (images also from blob:/data:).
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'"


class ClassProbability(BaseModel):
    class_name: str = Field(alias="class", description="class name")
    probability: float = Field(ge=0, le=1)

    model_config = {"populate_by_name": True}


class PredictResponse(BaseModel):
    top_k: list[ClassProbability] = Field(description="most probable first")
    model_input_png: str = Field(description="base64 PNG of the exact 32x32 RGB image the model classified")
    original_size: tuple[int, int] = Field(description="width, height of the uploaded image, upright")
    format: str = Field(description="image format, detected from the bytes")
    crop: bool = Field(description="true: centre crop to a square; false: the whole image squashed")


class HealthResponse(BaseModel):
    status: str
    version: str
    checkpoint: str
    epoch: int
    num_classes: int
    max_upload_bytes: int


class ClassesResponse(BaseModel):
    classes: list[str]


class ErrorResponse(BaseModel):
    detail: str


class UploadTooLarge(Exception):
    pass


class _MultipartFileReader:
    """Feeds a multipart/form-data body through python-multipart's streaming parser and keeps
    the bytes of the part named `field` in memory, up to `limit` bytes."""

    def __init__(self, boundary: bytes, field: str, limit: int):
        self.field, self.limit = field.encode(), limit
        self.data = bytearray()
        self.found = self.complete = False
        self.in_field = False
        self._headers: dict[bytes, bytes] = {}
        self._name = self._value = b""
        self.parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": lambda d, s, e: self._append("_name", d[s:e]),
                "on_header_value": lambda d, s, e: self._append("_value", d[s:e]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def _append(self, attr: str, chunk: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + chunk)

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self.in_field = options.get(b"name") == self.field and not self.found

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_field:
            self.data += data[start:end]
            if len(self.data) > self.limit:
                raise UploadTooLarge

    def _part_end(self) -> None:
        if self.in_field:
            self.found, self.in_field = True, False

    def _end(self) -> None:
        self.complete = True

    def write(self, chunk: bytes) -> None:
        self.parser.write(chunk)

    def finish(self) -> None:
        self.parser.finalize()


class Admission:
    """How many photos the server holds at once: `slots` being decoded and classified (on a
    pool of that many threads), up to `queue` more read and waiting for a slot. A request
    beyond that is refused before its photo is held in memory, and one that waits longer than
    `wait_s` for a slot gives up: both are 503 with Retry-After, which a client retries."""

    def __init__(self, slots: int, queue: int, wait_s: float = QUEUE_WAIT_S):
        if slots < 1 or queue < 0:
            raise ValueError(f"need at least one slot and a queue >= 0, got slots={slots}, queue={queue}")
        self.slots, self.capacity, self.wait_s = slots, slots + queue, wait_s
        self.admitted = 0  # read, waiting or being classified; changed on the event loop only
        self.semaphore = asyncio.Semaphore(slots)
        self.pool = ThreadPoolExecutor(slots, thread_name_prefix="classify")

    def busy(self) -> HTTPException:
        return HTTPException(
            503, f"the server is busy ({self.admitted} photos in progress or waiting, the most it takes at once "
                 f"is {self.capacity}); retry in a moment", headers={"Retry-After": "1"},
        )


async def discard_body(request: Request, limit: int) -> None:
    """Read and drop a refused request's body (up to `limit` bytes), so the client, still
    sending, gets the answer instead of a closed connection."""
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            break


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the upload is larger than the limit of {limit / 2**20:.1f} MiB; send a smaller image")


async def read_upload(request: Request, limit: int) -> bytes:
    """The uploaded image's bytes: the "file" field of a multipart/form-data body, or the raw
    body when it is sent as image/* or application/octet-stream. At most `limit` bytes are
    ever held; a larger upload is refused with 413 while it is still arriving."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise _too_large(limit)

    if content_type == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise HTTPException(400, "multipart/form-data body without a boundary")
        try:
            reader = _MultipartFileReader(boundary, "file", limit)
        except (ValueError, MultipartParseError) as exc:
            raise HTTPException(400, f"malformed multipart body: {exc}") from None
        total = 0
        try:
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit + MULTIPART_SLACK:
                    raise UploadTooLarge
                reader.write(chunk)
            reader.finish()
        except UploadTooLarge:
            raise _too_large(limit) from None
        except (ValueError, MultipartParseError) as exc:
            raise HTTPException(400, f"malformed multipart body: {exc}") from None
        if reader.in_field:
            raise HTTPException(400, 'the multipart body ends in the middle of the "file" field (an interrupted upload?)')
        if not reader.found:
            raise HTTPException(422, 'no "file" field in the form: send the image as the form field "file"')
        return bytes(reader.data)

    if content_type.startswith(b"image/") or content_type == b"application/octet-stream":
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _too_large(limit)
        return bytes(body)

    shown = content_type.decode("latin-1") or "none"
    raise HTTPException(
        415,
        f"content type {shown!r} is not accepted: send the image as the multipart/form-data field "
        '"file", or as the raw request body with an image/* or application/octet-stream type',
    )


def detect_format(data: bytes, max_pixels: int | None = None) -> str:
    """The image format from the bytes' header, or a 4xx saying what is wrong."""
    if not data:
        raise HTTPException(400, "the upload is empty (0 bytes); pick an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # decode_image decides
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
    except Image.DecompressionBombError as exc:
        raise HTTPException(400, f"the upload has {too_many_pixels(exc, max_pixels)}") from None
    except Exception:  # noqa: BLE001 - whatever Pillow raises, the bytes are not an image we take
        raise HTTPException(
            400, f"the upload is not an image (its content is not {', '.join(sorted(set(ALLOWED_FORMATS.values())))})"
        ) from None
    if fmt not in ALLOWED_FORMATS:
        raise HTTPException(
            415, f"the upload is in {fmt} format, which is not accepted; upload one of "
                 f"{', '.join(sorted(set(ALLOWED_FORMATS.values())))}"
        )
    return ALLOWED_FORMATS[fmt]


def png_base64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def create_app(
    model: LoadedModel,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    slots: int = DEFAULT_SLOTS,
    queue: int = DEFAULT_QUEUE,
) -> FastAPI:
    """The app for one loaded model. The interactive /docs pages are off because they load
    their scripts from a CDN; the schema itself is at /openapi.json."""
    return_freed_memory()
    admission = Admission(slots, queue)
    app = FastAPI(
        title="cifar100 classifier",
        version=__version__,
        description=(
            f"Classify a photo into one of {len(model.classes)} classes with the model from "
            f"`{model.checkpoint_path}`. Send the image to `POST /predict` as the multipart form "
            "field `file`, or as the raw body (`image/*` or `application/octet-stream`). "
            f"Uploads up to {max_upload_bytes / 2**20:.1f} MiB of JPEG, PNG, WebP, BMP, GIF or TIFF."
        ),
        docs_url=None,
        redoc_url=None,
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    if not model.center_crop:  # the page's crop box starts as the model's training images were made
        page = page.replace('<input id="crop" type="checkbox" checked>', '<input id="crop" type="checkbox">')

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"})

    @app.get("/health", response_model=HealthResponse, summary="Liveness and the loaded model")
    def health() -> HealthResponse:
        return HealthResponse(
            status="ok",
            version=__version__,
            checkpoint=str(model.checkpoint_path),
            epoch=model.epoch,
            num_classes=len(model.classes),
            max_upload_bytes=max_upload_bytes,
        )

    @app.get("/classes", response_model=ClassesResponse, summary="Class names in output order")
    def classes() -> ClassesResponse:
        return ClassesResponse(classes=list(model.classes))

    def classify(data: bytes, top_k: int, crop: bool) -> PredictResponse:
        fmt = detect_format(data, max_pixels)
        try:
            img = decode_image(data, max_pixels=max_pixels, reduce_to=DECODE_SIDE)
        except ImageError as exc:
            raise HTTPException(400, f"the upload cannot be used: {str(exc).removeprefix('the upload: ')}") from None
        model_input = to_model_input(img, size=32, crop=crop)
        original_size = img.info["original_size"]
        del img
        probs = model.probabilities(model_input[None])[0]
        best = np.argsort(-probs, kind="stable")[:top_k]
        return PredictResponse(
            top_k=[ClassProbability(class_name=model.classes[i], probability=float(probs[i])) for i in best],
            model_input_png=png_base64(model_input),
            original_size=original_size,
            format=fmt,
            crop=crop,
        )

    error_responses = {
        code: {"model": ErrorResponse, "description": text}
        for code, text in {
            400: "not an image, truncated or corrupt, empty, or too many pixels",
            413: f"larger than {max_upload_bytes} bytes",
            415: "an image format or content type that is not accepted",
            422: "no file field in the form, or a bad query parameter",
            503: "busy: as many photos as the server takes at once are in progress; retry after Retry-After seconds",
        }.items()
    }
    binary = {"type": "string", "format": "binary"}

    @app.post(
        "/predict",
        response_model=PredictResponse,
        summary="Classify one image",
        responses=error_responses,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {"type": "object", "required": ["file"], "properties": {"file": binary}}
                    },
                    "image/*": {"schema": binary},
                    "application/octet-stream": {"schema": binary},
                },
            }
        },
    )
    async def predict(
        request: Request,
        top_k: int = Query(5, ge=1, le=len(model.classes), description="how many classes to return"),
        crop: bool | None = Query(None, description="centre-crop to a square (true) or squash the whole image "
                                  "(false); default: as the model's training images were prepared"),
    ) -> PredictResponse:
        if admission.admitted >= admission.capacity:
            await discard_body(request, max_upload_bytes + MULTIPART_SLACK)
            raise admission.busy()
        admission.admitted += 1
        try:
            try:
                data = await asyncio.wait_for(read_upload(request, max_upload_bytes), UPLOAD_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the upload did not arrive within {UPLOAD_TIMEOUT_S:.0f} s") from None
            try:
                await asyncio.wait_for(admission.semaphore.acquire(), admission.wait_s)
            except asyncio.TimeoutError:
                raise admission.busy() from None
            try:
                # Decoding and the forward pass are CPU work: off the event loop, so /health stays live.
                crop = model.center_crop if crop is None else crop
                return await asyncio.get_running_loop().run_in_executor(admission.pool, classify, data, top_k, crop)
            finally:
                admission.semaphore.release()
        finally:
            admission.admitted -= 1
            data = None
            if admission.admitted == 0:
                trim()  # the burst is over: hand its memory back

    return app
