"""SIGTERM a training subprocess once it logs a given step, and keep every line it printed.

Why a helper: iterating over a pipe reads ahead into the file object's buffer, and
`Popen.communicate()` then reads the raw pipe, so lines already buffered (the step logged between
the SIGTERM and the pause) were silently dropped and an exact-resume check failed on a step that
had in fact run correctly. Here the rest is read from the same buffered object, and the stream we
do not watch goes to a file, so neither pipe can fill up and stall the child.
"""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from typing import IO, Literal


@dataclass(frozen=True)
class Interrupted:
    returncode: int
    watched: str  # everything the child wrote to the watched stream, in order, nothing dropped
    other: str  # the other stream


def sigterm_at_step(
    cmd: list[str],
    env: dict[str, str],
    step: re.Pattern[str],
    at: int,
    watch: Literal["stdout", "stderr"] = "stderr",
    timeout: float = 120.0,
) -> Interrupted:
    """Run `cmd`; SIGTERM it at the first line where `step`'s group 1 is >= `at`; wait for it to exit.

    A child that does not exit within `timeout` seconds after starting is killed, so a hang fails
    the test with the output so far instead of waiting for the suite's timeout.
    """
    with tempfile.TemporaryFile("w+") as other:
        pipes: dict[str, int | IO[str]] = {"stdout": other, "stderr": other, watch: subprocess.PIPE}
        proc = subprocess.Popen(cmd, env=env, text=True, stdout=pipes["stdout"], stderr=pipes["stderr"])
        stream = proc.stdout if watch == "stdout" else proc.stderr
        assert stream is not None
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            seen: list[str] = []
            for line in stream:
                seen.append(line)
                m = step.search(line)
                if m and int(m.group(1)) >= at:
                    proc.send_signal(signal.SIGTERM)
                    break
            seen.append(stream.read())  # the same buffered object: read-ahead lines are kept
            returncode = proc.wait()
        finally:
            watchdog.cancel()
            stream.close()
        other.seek(0)
        return Interrupted(returncode, "".join(seen), other.read())
