"""One run per record file: `stats_path` is checked and claimed before any model loads.

A run appends one record per sample to its `stats_path` and resumes from what the file holds.
Two runs appending to one file at once would each decode every sample and record it twice, so a
backend holds an exclusive lock (`filelock`, an flock on `<stats_path>.lock`) while it decodes;
the lock file names its holder (pid, host, start, command) for the other run's error message.
Data-parallel ranks write (and lock) their own `_rank<N>` files. No torch, no lmms-eval here.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
from pathlib import Path

from filelock import FileLock, Timeout

from lvspec_eval.config import ArgsError


class StatsPathError(ArgsError):
    """`stats_path` cannot be written, or another run is appending to it."""


def check_writable(path: Path) -> None:
    """Refuse a record file that cannot be created or appended to (before anything is loaded)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if path.is_dir():
                raise IsADirectoryError(21, "is a directory")
            with open(path, "ab"):
                pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StatsPathError(f"stats_path {str(path)!r} cannot be written ({reason}); give a writable file path "
                             "in --model_args stats_path=..., e.g. stats_path=lvspec_runs/run.jsonl") from None


def _owner_text(path: Path) -> str:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return "another run (its details are not readable)"
    return (f"another run: pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')} "
            f"({owner.get('command')})")


class RunLock:
    """Exclusive claim on one record file, held from the backend's start to the end of its decoding."""

    def __init__(self, stats_path: Path):
        self.stats_path = Path(stats_path)
        self.lock_path = self.stats_path.with_name(self.stats_path.name + ".lock")
        self._lock = FileLock(str(self.lock_path), timeout=0, thread_local=False)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> None:
        """Take the lock or raise StatsPathError naming the run that holds it; idempotent."""
        if self.held:
            return
        try:
            self._lock.acquire()
        except Timeout:
            raise StatsPathError(
                f"stats_path {str(self.stats_path)!r} is in use by {_owner_text(self.lock_path)}. Two runs appending "
                "to one record file would decode and record every sample twice: wait for that run to finish (this "
                "run then resumes from its records), or give this run another stats_path") from None
        except OSError as exc:
            raise StatsPathError(f"stats_path {str(self.stats_path)!r} cannot be locked: {self.lock_path} cannot be "
                                 f"written ({exc.strerror or type(exc).__name__}); give a writable file path in "
                                 "--model_args stats_path=...") from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "command": " ".join(sys.argv)[:300]}
        try:
            self.lock_path.write_text(json.dumps(owner) + "\n")
        except OSError:  # the lock holds without the note; the other run's message says less
            pass

    def release(self) -> None:
        if self.held:
            self._lock.release(force=True)


def claim_stats_path(path: Path) -> RunLock:
    """Check that `path` can be written and take its run lock (StatsPathError otherwise)."""
    check_writable(Path(path))
    lock = RunLock(Path(path))
    lock.acquire()
    return lock

