"""The SIGTERM helper keeps every line a child prints after the signal, however fast it prints."""

from __future__ import annotations

import os
import re
import sys

from .interrupt import sigterm_at_step

# Steps 1-150 arrive in one write, so 101-150 are already in the reader's buffer when it signals at
# step 100; the child takes the signal only then (blocked, then awaited: no race with its exit) and
# prints to 200.
CHILD = """
import signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
for i in range(1, 151):
    sys.stdout.write(f"step={i}\\n")
    print(f"noise {i}", file=sys.stderr)
sys.stdout.flush()
signal.sigwait({signal.SIGTERM})
for i in range(151, 201):
    sys.stdout.write(f"step={i}\\n")
    print(f"noise {i}", file=sys.stderr)
sys.stdout.flush()
sys.exit(85)
"""


def test_lines_printed_after_the_signal_are_kept() -> None:
    got = sigterm_at_step(
        [sys.executable, "-c", CHILD], dict(os.environ), re.compile(r"^step=(\d+)$", re.M), 100, "stdout"
    )
    assert got.returncode == 85
    assert [int(n) for n in re.findall(r"^step=(\d+)$", got.watched, re.M)] == list(range(1, 201))
    assert got.other.count("noise") == 200


def test_a_child_that_hangs_is_killed_at_the_timeout() -> None:
    hang = (
        "import signal, time; signal.signal(signal.SIGTERM, lambda *_: None);"
        "print('step=1', flush=True); time.sleep(60)"
    )
    got = sigterm_at_step(
        [sys.executable, "-c", hang], dict(os.environ), re.compile(r"step=(\d+)"), 1, "stdout", 2
    )
    assert got.returncode < 0 and "step=1" in got.watched
