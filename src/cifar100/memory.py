"""glibc malloc's policy for the two kinds of process this tool runs. Training allocates the
same large buffers every step and wants them kept; a server decodes photos of any size in
bursts and must give the memory back when a burst is over. Elsewhere (macOS, musl) these do
nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc has both; others raise here
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> None:
    """Keep freed memory instead of returning it to the OS. By default every activation buffer
    above the mmap threshold is mmap'ed and munmap'ed at each step, and touching fresh pages
    again costs a page fault per 4 KiB: on a 2-core CPU that was a quarter of the training
    time spent in the kernel."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's upper limit on 64-bit; larger is refused
        libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)


def return_freed_memory() -> None:
    """Give large freed blocks back to the OS at once. A decoded photo is one block of tens to
    hundreds of MB: with a fixed mmap threshold it is mmap'ed and unmapped when freed (glibc's
    default raises the threshold after the first such free, so later photos would stay in the
    heap), and two arenas instead of eight per core keep decode threads from each holding a
    heap of their own."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
        libc.mallopt(M_ARENA_MAX, 2)


def trim() -> None:
    """Return the free memory at the top of every heap to the OS (after a burst)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
