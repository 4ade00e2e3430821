"""Safe image decoding and the 32x32 preprocessing shared by the image-folder reader, `predict`
and `serve`.

`decode_image` turns whatever a user brings (a path or raw bytes: JPEG, PNG including 16-bit,
palette and alpha, WebP, BMP, the first frame of a GIF, grayscale, CMYK) into an upright RGB
`PIL.Image`, or raises `ImageError` saying what is wrong. The pixel count is checked from the
header, before any pixel is decoded, so a decompression bomb costs nothing.

`to_model_input` makes the model's view of that image: a centre crop to a square (or a squash
when `crop=False`) and a good-quality downscale to `size` x `size` uint8 RGB.
"""

from __future__ import annotations

import functools
import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cifar100.errors import ImageError

DEFAULT_MAX_PIXELS = 50_000_000

# Transparent pixels are shown on white, as a browser or file viewer shows them; black would
# turn a logo on a transparent background into a dark blob the model never saw in training.
BACKGROUND = (255, 255, 255)

# Pillow renders EPS by running Ghostscript, an external program with a history of exploits
# through crafted PostScript; a photo is never PostScript, so that plugin is never used.
REFUSED_FORMATS = {"EPS"}

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_REDUCIBLE_MODES = {"RGB", "RGBA", "L", "LA"}
_WIDE_GRAY_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


def decode_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    label: str | None = None,
    reduce_to: int | None = None,
) -> Image.Image:
    """Decode a path or raw bytes into an upright (EXIF orientation applied) RGB image.

    `reduce_to`: a photo whose shorter side is at least twice this is decoded smaller, to no
    less than `reduce_to` pixels on its shorter side: JPEGs at 1/2, 1/4 or 1/8 scale by the
    decoder itself (the full-size image never exists in memory), other formats shrunk by an
    integer factor right after decoding (after the RGB conversion for palette, CMYK and
    16-bit images). The image's `info["original_size"]`
    is the upright size of the file's image either way.

    Raises ImageError for a missing or empty file, something that is not an image, a truncated
    image, and an image with more than `max_pixels` pixels (refused before decoding). `label`
    names the source in error messages (default: the path, or "the upload")."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = label or "the upload"
        size = len(source)
        stream: io.BytesIO | Path = io.BytesIO(bytes(source))
    else:
        stream = Path(source)
        label = label or str(stream)
        if not stream.is_file():
            raise ImageError(f"{label}: no such file" if not stream.exists() else f"{label}: not a file")
        size = stream.stat().st_size  # the file itself is read only as far as Pillow needs
    if size == 0:
        raise ImageError(f"{label}: the file is empty (0 bytes), not an image")

    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make it a refusal too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream, formats=_decodable_formats()) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{label}: {width}x{height} = {width * height:,} pixels is more than the "
                        f"limit of {max_pixels:,}; refusing to decode it (resize it first)"
                    )
                if reduce_to and img.format in ("JPEG", "MPO"):
                    img.draft(None, (reduce_to, reduce_to))
                img.load()
                loaded = img.size
                # Upright first (a reduced copy would lose a TIFF's orientation tag); in place,
                # so an upright photo is not copied at full size.
                ImageOps.exif_transpose(img, in_place=True)
                turned = img.size != loaded
                factor = min(img.size) // reduce_to if reduce_to else 1
                if factor >= 2 and img.mode in _REDUCIBLE_MODES:
                    img, factor = img.reduce(factor), 1
                rgb = _to_rgb(img)
                del img
                if factor >= 2:  # modes reduce() does not take are converted first, then reduced
                    rgb = rgb.reduce(factor)
                rgb.info["original_size"] = (height, width) if turned else (width, height)
                return rgb
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{label}: {too_many_pixels(exc, max_pixels)}") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{label}: not an image Pillow can read (JPEG, PNG, WebP, BMP, GIF, TIFF, ...)"
        ) from None
    except PermissionError as exc:
        raise ImageError(f"{label}: cannot be read ({exc.strerror})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports a cut-off or corrupt pixel stream as OSError ("image file is
        # truncated"), and a broken header as SyntaxError/ValueError, depending on the format.
        raise ImageError(f"{label}: the image is truncated or corrupt ({exc})") from None
    except Exception as exc:  # noqa: BLE001
        # Crafted headers get through Pillow's plugins as other types too (a TIFF strip offset
        # stored as a fraction: TypeError; as a huge number: OverflowError; DDS and BLP:
        # NotImplementedError; found by tests/test_fuzz.py). Bytes no decoder can make sense of
        # are a corrupt file, whatever the plugin calls it.
        raise ImageError(f"{label}: the image is corrupt ({type(exc).__name__}: {exc})") from None


def too_many_pixels(exc: Exception, max_pixels: int | None = None) -> str:
    """Pillow's decompression-bomb refusal (raised from the header, before any pixel is
    decoded), in this project's words: how many pixels the header claims, and the limit."""
    found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+) pixels", str(exc))
    if not found:
        return "too many pixels to decode safely; resize it first"
    claimed, limit = int(found.group(1)), int(found.group(2))
    limit = min(limit, max_pixels) if max_pixels else limit
    return f"too many pixels to decode safely: its header claims {claimed:,}, more than the limit of {limit:,}; resize it first"


def image_suffixes() -> frozenset[str]:
    """File name endings (".jpg", lower-case) of every format this Pillow can open, not the
    save-only ones: what makes a file in a folder look like an image to `predict` and to the
    image-folder reader. Not cached: a plugin registered later (pillow-heif) adds its own."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


@functools.cache
def _decodable_formats() -> tuple[str, ...]:
    Image.init()  # registers every plugin, so the list is complete
    return tuple(name for name in Image.OPEN if name not in REFUSED_FORMATS)


def _to_rgb(img: Image.Image) -> Image.Image:
    """A new 8-bit RGB image from any Pillow mode; alpha is composited on white."""
    if img.mode == "RGB":
        return img.copy()
    if img.mode in _WIDE_GRAY_MODES:
        return Image.fromarray(_wide_gray_to_uint8(np.asarray(img)), mode="L").convert("RGB")
    if img.mode == "F":
        # Float images (TIFF) have no agreed range; stretch what is there to 0..255.
        return Image.fromarray(_stretch_to_uint8(np.asarray(img, dtype=np.float64)), mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    # L, 1, P, CMYK, YCbCr, LAB, HSV: Pillow's own conversions are right for these.
    return img.convert("RGB")


def _wide_gray_to_uint8(array: np.ndarray) -> np.ndarray:
    # 16-bit grayscale (PNG/TIFF) spans 0..65535; 65535 / 257 = 255 maps white to white.
    values = array.astype(np.int64)
    if values.max(initial=0) > 65535 or values.min(initial=0) < 0:
        return _stretch_to_uint8(values.astype(np.float64))
    return ((values + 128) // 257).astype(np.uint8)


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    finite = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min(initial=0.0)), float(finite.max(initial=0.0))
    if high <= low:
        return np.zeros(finite.shape, dtype=np.uint8)
    return np.round((finite - low) * (255.0 / (high - low))).astype(np.uint8)


def to_model_input(img: Image.Image, size: int = 32, crop: bool = True) -> np.ndarray:
    """uint8 (size, size, 3) RGB: centre-cropped to a square (crop=True) or squashed to one
    (crop=False), then resized with a Lanczos filter. A size x size RGB image is untouched."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if img.mode != "RGB":
        img = _to_rgb(img)
    width, height = img.size
    if (width, height) == (size, size):
        return np.array(img, dtype=np.uint8)
    if crop:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    else:
        box = (0, 0, width, height)
    # Crop first: resize(box=...) would let Lanczos pull colour from outside the crop into the
    # border pixels. reducing_gap: shrink by an integer factor with a box filter first, then
    # Lanczos for the last step; as sharp as pure Lanczos and far faster on a 12-megapixel photo.
    small = img.crop(box).resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.array(small, dtype=np.uint8)
