"""One run per record file: `stats_path` is checked and claimed before any model loads.

A run appends one record per sample to its `stats_path` and resumes from what the file holds.
Two runs appending to one file at once would each decode every sample and record it twice, so a
backend holds an exclusive lock (`filelock`, an flock on `<stats_path>.run.lock`; `<stats_path>.lock` is the
per-append lock of `lvspec_eval.metrics.jsonl`) while it decodes;
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
    """Exclusive claim on record files, held from the backend's start to the end of its decoding.

    `stats_path` is the file this process appends to; `also` are further record paths to claim,
    e.g. rank 0 of a data-parallel run claims the run's base stats_path as well, so that a
    single-process run on that path and a data-parallel one (writing `_rank<N>` files) exclude
    each other too."""

    def __init__(self, stats_path: Path, *also: Path):
        self.paths = [Path(stats_path), *(Path(p) for p in also)]
        self._locks = [FileLock(str(_lock_path(p)), timeout=0, thread_local=False) for p in self.paths]

    @property
    def stats_path(self) -> Path:
        return self.paths[0]

    @property
    def held(self) -> bool:
        return all(lock.is_locked for lock in self._locks)

    def acquire(self) -> None:
        """Take every lock or raise StatsPathError naming the run that holds one (taking none); idempotent."""
        taken = []
        try:
            for path, lock in zip(self.paths, self._locks):
                if not lock.is_locked:
                    _take(path, lock)
                    taken.append(lock)
        except BaseException:
            for lock in taken:
                lock.release(force=True)
            raise

    def release(self) -> None:
        for lock in self._locks:
            if lock.is_locked:
                lock.release(force=True)


def _lock_path(stats_path: Path) -> Path:
    return stats_path.with_name(stats_path.name + ".run.lock")  # <stats_path>.lock is the append lock (metrics.jsonl)


def _take(stats_path: Path, lock: FileLock) -> None:
    lock_path = _lock_path(stats_path)
    try:
        lock.acquire()
    except Timeout:
        raise StatsPathError(
            f"stats_path {str(stats_path)!r} is in use by {_owner_text(lock_path)}. Two runs appending to one record "
            "file would decode and record every sample twice: wait for that run to finish (this run then resumes "
            "from its records), or give this run another stats_path") from None
    except OSError as exc:
        raise StatsPathError(f"stats_path {str(stats_path)!r} cannot be locked: {lock_path} cannot be written "
                             f"({exc.strerror or type(exc).__name__}); give a writable file path in "
                             "--model_args stats_path=...") from None
    owner = {"pid": os.getpid(), "host": socket.gethostname(),
             "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             "command": " ".join(sys.argv)[:300]}
    try:
        lock_path.write_text(json.dumps(owner) + "\n")
    except OSError:  # the lock holds without the note; the other run's message says less
        pass


def claim_stats_path(path: Path, *also: Path) -> RunLock:
    """Check that `path` can be written and take the run locks of `path` and `also` (StatsPathError otherwise)."""
    check_writable(Path(path))
    lock = RunLock(Path(path), *also)
    lock.acquire()
    return lock
