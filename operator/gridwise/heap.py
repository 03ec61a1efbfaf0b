"""Keeps the operator's resident memory down where the runtime's defaults do not.

Freed heap goes back to the operating system (glibc's malloc_trim), as Dask's workers do. A zone
wake parses and builds thousands of short-lived bodies and statuses. CPython frees them, but glibc
keeps the freed pages in the process, so the operator's resident memory stays at its burst peak:
measured at 300 jobs, 181 MiB resident of which `malloc_trim` returned 30 MiB. A no-op where the C
library has no malloc_trim (musl, macOS).

And TLS connections read into smaller buffers: asyncio gives each one a 256 KiB read buffer,
zero-filled and so resident, and the operator holds 70 to 170 connections to its API server
(gridwise's own client, kopf's watches, patches and Events).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from asyncio import sslproto
from collections.abc import Callable

log = logging.getLogger(__name__)

# A TLS record carries at most 16 KiB, so a read of 64 KiB still takes four at once.
TLS_READ_BUFFER = 64 * 1024
# A zone wake frees most of what it builds within seconds, while the next burst (the held status
# writes, their watch echoes, the follow-up ticks) is still coming: trimming every 5 s instead of
# 30 s lowered the peak at 1000 jobs by about 2.5 MiB (BENCHMARKS.md, issue 12, sixteenth round),
# for a few milliseconds of the event loop per trim.
TRIM_INTERVAL_S = 5.0


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _load_trim()


def release_free_heap() -> bool:
    """Returns freed heap pages to the OS; True when the C library could (and did) release some."""
    return bool(_TRIM is not None and _TRIM(0))


def can_release() -> bool:
    return _TRIM is not None


async def release_periodically(stop: asyncio.Event, interval_s: float = TRIM_INTERVAL_S) -> None:
    """Until `stop`: trims every `interval_s` wall seconds (a few milliseconds for a 100 MiB heap)."""
    if _TRIM is None:
        log.debug("no malloc_trim in this C library: freed heap stays with the process")
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        release_free_heap()


def shrink_tls_read_buffers() -> None:
    """TLS connections asyncio opens from now on read into `TLS_READ_BUFFER`-byte buffers (CPython's
    own: 256 KiB).

    `max_size` is the class attribute CPython's `SSLProtocol` sizes its read buffer and each read
    by (3.11 to 3.13); tests/unit/test_tls_buffers.py checks that a connection still gets it.
    """
    sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
