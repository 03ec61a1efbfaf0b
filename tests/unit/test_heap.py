"""Freed heap goes back to the OS: the operator's resident memory does not stay at its burst peak."""

from __future__ import annotations

import platform
from pathlib import Path

from gridwise.heap import can_release, release_free_heap


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_freed_heap_is_returned_to_the_operating_system() -> None:
    assert platform.system() == "Linux" and can_release(), "this machine's glibc has malloc_trim"
    burst = [bytes(4000) + bytes([i % 256]) for i in range(50_000)]  # ~200 MiB in malloc'd chunks
    keep = bytes(4000) + b"top"  # allocated last: the heap cannot shrink from its top on its own
    del burst
    before = _rss_kib()
    assert release_free_heap(), "malloc_trim released nothing"
    after = _rss_kib()
    assert before - after > 100 * 1024, f"RSS {before} -> {after} KiB"
    assert keep.endswith(b"top")
