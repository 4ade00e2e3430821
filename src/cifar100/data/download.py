"""Fetch a URL into the cache with a progress bar, resume, retries and checksum verification
(md5 for the official CIFAR archives, which publish md5s; sha256 for shared weights).

The bytes go to `<name>.part` and only a file whose checksum matches is renamed to `<name>`, so a
file under the final name is always a verified one (or one a user placed there by hand, which
the caller verifies before use). A transfer that breaks off is resumed with an HTTP Range
request from the end of the `.part` file; a server that ignores Range gets a clean restart. A
`.part` left by a failed run is resumed by the next one.

Anything that cannot be fixed by trying again (no network, connection refused, HTTP 404, a
checksum that does not match) ends in ONE `DownloadError` naming the URL, the expected checksum and
the exact path where the file can be placed by hand. Only urllib is used: no extra dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cifar100.errors import DownloadError

CHUNK_SIZE = 1 << 20
USER_AGENT = "cifar100-downloader (python urllib)"

# HTTP statuses worth another try: the server or a proxy is busy or restarting.
_TRANSIENT_STATUSES = {408, 425, 429, 500, 502, 503, 504}


class _TransientError(Exception):
    """A failure that another attempt (resuming from the .part file) may get past."""


def file_digest(path: str | Path, algorithm: str = "md5", chunk_size: int = CHUNK_SIZE) -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_md5(path: str | Path, chunk_size: int = CHUNK_SIZE) -> str:
    return file_digest(path, "md5", chunk_size)


def manual_download_hint(url: str, checksum: str, dest: Path, size: int | None = None, algorithm: str = "md5") -> str:
    size_text = f", {size:,} bytes" if size else ""
    mirror = ", or set CIFAR100_MIRROR to a server that has it" if algorithm == "md5" else ""
    return (
        f"You can download {url} yourself ({algorithm} {checksum}{size_text}) and place it at {dest}"
        f"{mirror}; then run the command again."
    )


def download_file(
    url: str,
    dest: str | Path,
    checksum: str,
    *,
    algorithm: str = "md5",
    size: int | None = None,
    max_bytes: int | None = None,
    quiet: bool = False,
    attempts: int = 3,
    timeout: float = 60.0,
    retry_wait: float = 1.0,
) -> Path:
    """Download `url` to `dest` and verify its `algorithm` (md5, sha256) checksum; returns `dest`.

    `size` (expected bytes, optional) only improves the progress bar and the error message.
    `max_bytes`: a server that sends more than this is cut off (the checksum only speaks at the
    end, and a file of known length has no business being longer).
    `attempts`: requests in all while failures are of the kind a retry may fix (a transfer
    that breaks off, a timeout, HTTP 5xx); between them we wait `retry_wait`, doubling."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    hint = manual_download_hint(url, checksum, dest, size, algorithm)
    restarted_after_bad_checksum = False
    last_problem = "no attempt was made"
    attempt = 0
    while attempt < attempts:
        attempt += 1
        resumed_from = part.stat().st_size if part.exists() else 0
        try:
            _transfer(url, part, resumed_from, size=size, quiet=quiet, timeout=timeout, max_bytes=max_bytes)
        except _TransientError as exc:
            last_problem = str(exc)
            if attempt < attempts:
                time.sleep(retry_wait * 2 ** (attempt - 1))
            continue
        except DownloadError as exc:
            raise DownloadError(f"{exc}. {hint}") from None

        actual = file_digest(part, algorithm)
        if actual == checksum.lower():
            os.replace(part, dest)
            return dest
        part.unlink(missing_ok=True)
        if resumed_from and not restarted_after_bad_checksum:
            # The bytes kept from an earlier try may be what is wrong (a server that changed
            # the file, a proxy that mangled a range): start over once from byte 0.
            restarted_after_bad_checksum = True
            attempt -= 1
            continue
        raise DownloadError(
            f"the file downloaded from {url} has {algorithm} {actual}, expected {checksum}; it was deleted. {hint}"
        )
    # The .part file stays: the next run resumes from it instead of starting again.
    raise DownloadError(f"could not download {url} after {attempts} attempts ({last_problem}). {hint}")


def fetch_small_file(url: str, limit: int, *, timeout: float = 60.0) -> bytes:
    """The bytes at `url` (at most `limit` of them), for a small file with no checksum of its
    own, such as the config.json that carries a weights file's sha256."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"could not download {url}: {getattr(exc, 'reason', exc)}") from None
    if len(data) > limit:
        raise DownloadError(f"{url} is larger than the {limit:,} bytes such a file can be")
    return data


def _transfer(url: str, part: Path, offset: int, *, size: int | None, quiet: bool, timeout: float,
              max_bytes: int | None = None) -> None:
    """One HTTP request: append to `part` from `offset` (or rewrite it from byte 0 when the
    server does not honour the Range). Raises _TransientError for what a retry may fix."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # The .part is already as long as the file (or longer): let the checksum decide, and a
            # bad one starts over.
            if size is None or offset >= size:
                return
            part.unlink(missing_ok=True)
            raise _TransientError(f"the server refused to resume at byte {offset}") from None
        if exc.code in _TRANSIENT_STATUSES:
            raise _TransientError(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise _TransientError(f"timed out connecting ({reason})") from None
        raise DownloadError(f"could not download {url}: {reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        # Reset or dropped while the headers were on their way: worth another try.
        raise _TransientError(f"connection failed ({exc})") from None

    with response:
        status = response.status
        start = offset if status == 206 else 0
        if status == 206:
            content_range = response.headers.get("Content-Range", "")
            match = re.match(r"bytes (\d+)-", content_range)
            if not match or int(match.group(1)) != offset:
                # A range we did not ask for: appending it would corrupt the file.
                part.unlink(missing_ok=True)
                raise _TransientError(f"the server answered a different range ({content_range!r})")
        length = response.headers.get("Content-Length")
        expected_total = start + int(length) if length and length.isdigit() else size
        mode = "ab" if start else "wb"
        received = 0
        with open(part, mode) as f, _progress_bar(url, expected_total, start, quiet) as bar:
            try:
                while chunk := response.read(CHUNK_SIZE):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if max_bytes is not None and start + received > max_bytes:
                        break
            except (OSError, http.client.HTTPException) as exc:
                # A server that stops early shows up as IncompleteRead or a connection reset.
                raise _TransientError(f"the transfer broke off after {start + received:,} bytes ({exc})") from None
    if max_bytes is not None and start + received > max_bytes:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url} sent more than the {max_bytes:,} bytes the file has; stopped and deleted it")
    if length and length.isdigit() and received < int(length):
        raise _TransientError(f"the server sent {received:,} of {int(length):,} bytes")


def _progress_bar(url: str, total: int | None, initial: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=url.rsplit("/", 1)[-1],
        file=sys.stderr,
        # A bar in a log file is noise; show it only to a person at a terminal.
        disable=quiet or not sys.stderr.isatty(),
        leave=False,
    )
