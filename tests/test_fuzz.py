"""Fuzzing the readers of untrusted files: whatever bytes come in, the image decoder, the CIFAR
pickle reader and the image-folder archive reader either return well-formed data or raise their
named error (ImageError, DatasetError); they never crash with another exception, never run code,
and never leave a half-written cache behind.

Hypothesis runs a fixed number of examples, derandomized and without an example database, so CI
sees the same inputs on every run (about 30 s on 2 cores). The regression tests under each
heading are the crashes fuzzing found, kept as plain tests."""

from __future__ import annotations

import functools
import io
import os
import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cifar100.errors import ImageError
from cifar100.images import decode_image, to_model_input



def fuzz(examples: int) -> settings:
    """Reproducible: the same `examples` inputs on every run, nothing remembered between runs."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )

# Pillow warns about the damage it works around ("Corrupt EXIF data", "Truncated File Read");
# these tests are about what it raises, not what it says.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# --- mutations ------------------------------------------------------------------------------


# Where a mutation lands: the first 64 bytes hold the headers that steer a parser, so half of
# the mutations go there; the rest anywhere in the file.
positions = st.one_of(st.integers(0, 63), st.integers(0, 1 << 20))
mutation = st.one_of(
    st.tuples(st.just("set"), positions, st.integers(0, 255)),
    st.tuples(st.just("truncate"), positions, st.just(0)),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), positions, st.integers(1, 8)),
    # Extreme values where parsers read sizes, offsets and counts.
    st.tuples(st.just("word"), positions, st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00"])),
)


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    out = bytearray(data)
    for op, position, arg in mutations:
        i = position % (len(out) + 1)
        if op == "set" and i < len(out):
            out[i] = arg
        elif op == "truncate":
            del out[i:]
        elif op == "insert":
            out[i:i] = arg
        elif op == "delete":
            del out[i : i + arg]
        elif op == "word":
            out[i : i + 4] = arg
    return bytes(out)


# --- images ---------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@functools.cache
def seed_images() -> dict[str, bytes]:
    """Small valid files in the formats users bring, each with something for a parser to get
    wrong: alpha, palettes, 16-bit samples, animation, EXIF orientation, progressive JPEG."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (12, 20, 4), dtype=np.uint8))
    gray16 = Image.fromarray(rng.integers(0, 65536, (12, 20), dtype=np.uint16))
    palette = rgb.convert("P")
    exif = rgb.getexif()
    exif[0x0112] = 6  # rotate on display
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return {
        "jpeg": encode(rgb, "JPEG", quality=80, exif=exif.tobytes()),
        "jpeg-progressive": encode(rgb, "JPEG", progressive=True),
        "png": encode(rgb, "PNG"),
        "png-rgba": encode(rgba, "PNG"),
        "png-16bit-gray": encode(gray16, "PNG"),
        "png-palette-transparent": encode(palette, "PNG", transparency=3),
        "gif-animated": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "webp": encode(rgb, "WEBP", quality=80),
        "webp-lossless-rgba": encode(rgba, "WEBP", lossless=True),
        "bmp": encode(rgb, "BMP"),
        "tiff": encode(rgb, "TIFF"),
        "tiff-16bit-gray": encode(gray16, "TIFF"),
    }


def assert_decodes_or_refuses(data: bytes) -> None:
    """The contract: an RGB image whose model input is uint8 (32, 32, 3), or an ImageError."""
    try:
        img = decode_image(data)
    except ImageError as exc:
        assert str(exc).startswith("the uploaded data: ")
        return
    assert img.mode == "RGB" and img.width > 0 and img.height > 0
    x = to_model_input(img)
    assert x.dtype == np.uint8 and x.shape == (32, 32, 3)


def test_seed_images_decode():
    for name, data in seed_images().items():
        assert to_model_input(decode_image(data)).shape == (32, 32, 3), name


@fuzz(1500)
@given(name=st.sampled_from(sorted(seed_images())), mutations=st.lists(mutation, min_size=1, max_size=6))
def test_mutated_images_decode_or_raise_image_error(name, mutations):
    assert_decodes_or_refuses(mutate(seed_images()[name], mutations))


# File signatures, so that random bytes reach the format parsers and not only the "unknown
# format" path.
MAGICS = [b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
          b"BM", b"II*\x00", b"MM\x00*", b"DDS |\x00\x00\x00", b"8BPS", b"\x00\x00\x01\x00", b"P6\n"]


@fuzz(600)
@given(magic=st.sampled_from(MAGICS), body=st.binary(max_size=600))
def test_arbitrary_bytes_decode_or_raise_image_error(magic, body):
    assert_decodes_or_refuses(magic + body)


def tiff_with_strip_offsets_of_type(tag_type: int) -> bytes:
    """A valid 4x4 white TIFF whose StripOffsets entry is re-typed: as RATIONAL (5) it reads as
    a fraction, as LONG8 (16) as 8 bytes of pixel data (0xff...: 2**64 - 1)."""
    data = bytearray(encode(Image.new("RGB", (4, 4), (255, 255, 255)), "TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == 273:  # StripOffsets
            struct.pack_into("<H", data, entry + 2, tag_type)
    return bytes(data)


def dds_with_pixel_format_flags(flags: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (4, 4)), "DDS"))
    struct.pack_into("<I", data, 80, flags)  # DDS_PIXELFORMAT.dwFlags
    return bytes(data)


@pytest.mark.parametrize(
    "data, pillow_raised",
    [
        (tiff_with_strip_offsets_of_type(5), "TypeError"),
        (tiff_with_strip_offsets_of_type(16), "OverflowError"),
        (dds_with_pixel_format_flags(0), "NotImplementedError"),
    ],
    ids=["tiff-rational-offset", "tiff-huge-offset", "dds-unknown-pixel-format"],
)
def test_crafted_headers_found_by_fuzzing_are_image_errors(tmp_path, data, pillow_raised):
    with pytest.raises(ImageError, match=rf"the uploaded data: the image is corrupt \({pillow_raised}"):
        decode_image(data)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=r"photo.jpg: the image is (truncated or )?corrupt"):
        decode_image(path)



def test_postscript_is_refused_without_running_ghostscript(tmp_path):
    """Pillow renders EPS by running Ghostscript, an external program with a history of
    exploits through crafted PostScript. A `gs` on the PATH that records its calls shows whether
    decoding a file named like a photo runs it (in a fresh process: Pillow caches where gs is)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ran = tmp_path / "gs-ran"
    fake_gs = bin_dir / "gs"
    fake_gs.write_text(f"#!/bin/sh\necho \"$@\" >> {ran}\n")
    fake_gs.chmod(0o755)
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(encode(Image.new("RGB", (4, 4), (1, 2, 3)), "EPS"))
    script = textwrap.dedent(
        """
        import sys
        from cifar100.errors import ImageError
        from cifar100.images import decode_image
        try:
            decode_image(sys.argv[1])
        except ImageError as exc:
            print(exc)
        """
    )
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run([sys.executable, "-c", script, str(photo)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not ran.exists(), f"Ghostscript was run: {ran.read_text()}"
    assert "holiday.jpg: not an image" in result.stdout
