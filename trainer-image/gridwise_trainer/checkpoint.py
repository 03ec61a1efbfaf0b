"""Atomic, checksummed checkpoints with fallback: a pre-empted job must never lose or trust bad work.

File format (one file per checkpoint, ``ckpt-<step:010d>.pt``)::

    b"GRIDWISE-CKPT v1\\n"                      magic, identifies our files
    {"format": 1, "step": .., "job": .., "sha256": .., "payload_bytes": .., "created_unix": ..}\\n
    <payload: torch.save() of a dict of tensors and plain Python values>

torch is imported only where payloads are (de)serialised: the elastic launcher reads headers alone.

Writes go to a temp file in the same directory, are fsynced, renamed over the final name and
the directory is fsynced, so a reader sees either the old set of files or the new one. Only rank 0
writes (issue 7); every rank reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAGIC = b"GRIDWISE-CKPT v1\n"
FORMAT = 1
_NAME = re.compile(r"^ckpt-(\d{10})\.pt$")
_MAX_HEADER = 4096


class CheckpointError(Exception):
    """A checkpoint file that must not be resumed from; the message says why, for the log."""


@dataclass(frozen=True)
class Header:
    step: int
    job: str
    sha256: str
    payload_bytes: int
    created_unix: float


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def encode(step: int, job: str, state: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    header = {
        "format": FORMAT,
        "step": step,
        "job": job,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload),
        "created_unix": time.time(),
    }
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def read_header(path: Path) -> tuple[Header, int]:
    """Parse magic and header; returns the header and the payload offset."""
    with path.open("rb") as f:
        head = f.read(len(MAGIC) + _MAX_HEADER)
    if not head.startswith(MAGIC):
        raise CheckpointError("not a gridwise checkpoint (bad magic; foreign or garbage file)")
    end = head.find(b"\n", len(MAGIC))
    if end < 0:
        raise CheckpointError("truncated header")
    try:
        raw = json.loads(head[len(MAGIC) : end])
        if raw.get("format") != FORMAT:
            raise CheckpointError(f"unsupported checkpoint format {raw.get('format')!r}")
        header = Header(
            int(raw["step"]),
            str(raw["job"]),
            str(raw["sha256"]),
            int(raw["payload_bytes"]),
            float(raw["created_unix"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"unreadable header ({exc})") from None
    return header, end + 1


def verify(path: Path, expected_job: str | None) -> tuple[Header, bytes]:
    """Owner, length and checksum, without unpickling: what makes a file's step trustworthy."""
    header, offset = read_header(path)
    if expected_job is not None and header.job != expected_job:
        raise CheckpointError(f"belongs to job {header.job!r}, not {expected_job!r} (foreign checkpoint)")
    payload = path.read_bytes()[offset:]
    if len(payload) != header.payload_bytes:
        raise CheckpointError(
            f"truncated: payload is {len(payload)} bytes, header says {header.payload_bytes}"
        )
    digest = hashlib.sha256(payload).hexdigest()
    if digest != header.sha256:
        raise CheckpointError(f"checksum mismatch: sha256 {digest[:12]}.. != recorded {header.sha256[:12]}..")
    return header, payload


def decode(path: Path, expected_job: str | None) -> tuple[Header, dict[str, Any]]:
    """Verify length, checksum and owner before unpickling anything (weights_only as well)."""
    import torch

    header, payload = verify(path, expected_job)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # a checksum match makes this unlikely, but never crash the job on it
        raise CheckpointError(f"payload does not load ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError("payload is not a state dict")
    return header, state


class CheckpointManager:
    """Keeps the newest `keep` checkpoints of one job in one directory."""

    def __init__(self, directory: Path, job: str, keep: int = 3, writer: bool = True) -> None:
        self.directory = directory
        self.job = job
        self.keep = keep
        self.writer = writer
        if writer:
            directory.mkdir(parents=True, exist_ok=True)
            for stale in directory.glob(".ckpt-*.tmp*"):
                log.info("removing temp file %s left by an interrupted save", stale.name)
                stale.unlink(missing_ok=True)

    def candidates(self) -> list[tuple[int, Path]]:
        """Checkpoint files by step, newest first (by name; validity is checked on load)."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
        return sorted(found, reverse=True)

    def save(self, step: int, state: dict[str, Any]) -> Path | None:
        """Atomically write one checkpoint and drop the oldest beyond `keep`; non-writers do nothing."""
        if not self.writer:
            return None
        data = encode(step, self.job, state)
        final = self.directory / f"ckpt-{step:010d}.pt"
        tmp = self.directory / f".{final.name}.tmp.{os.getpid()}"
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.directory)
        self._retain()
        return final

    def _retain(self) -> None:
        ours = []
        for step, path in self.candidates():
            try:
                header, _ = read_header(path)
            except (CheckpointError, OSError):
                continue  # not ours to delete
            if header.job == self.job:
                ours.append((step, path))
        for _, path in ours[self.keep :]:
            path.unlink(missing_ok=True)

    def load_latest(self) -> tuple[int, dict[str, Any], Path] | None:
        """Newest valid checkpoint; invalid ones are logged, set aside as *.corrupt and skipped."""
        for step, path in self.candidates():
            try:
                header, state = decode(path, self.job)
            except (CheckpointError, OSError) as exc:
                log.warning("checkpoint %s is unusable: %s; falling back to the previous one", path.name, exc)
                self._set_aside(path, exc)
                continue
            if header.step != step:
                log.warning("checkpoint %s says step %d; trusting the header", path.name, header.step)
            return header.step, state, path
        return None

    def _set_aside(self, path: Path, exc: BaseException) -> None:
        """Rename a bad file rather than delete it: nothing is lost, and it is not retried or retained."""
        if not self.writer or "foreign" in str(exc):
            return
        try:
            os.replace(path, path.with_name(path.name + ".corrupt"))
        except OSError as err:
            log.warning("could not set aside %s: %s", path.name, err)


def completed_step(directory: Path, job: str, total_steps: int) -> int | None:
    """The step of a verified checkpoint at or past `total_steps`: the training already finished.

    An elastic replica started after the last step (a scale-up that raced the finish) must not wait
    for a rendezvous host that is gone; it reads this and exits complete. Headers and checksums
    only, so the launcher never imports torch.
    """
    if not directory.is_dir():
        return None
    for step, path in CheckpointManager(directory, job, writer=False).candidates():
        if step < total_steps:
            return None
        try:
            header, _ = verify(path, job)
        except (CheckpointError, OSError):
            continue
        if header.step >= total_steps:
            return header.step
    return None
