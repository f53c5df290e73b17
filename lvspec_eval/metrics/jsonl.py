"""JSON Lines files: whole-line appends under a lock, one reader policy, tail repair.

The reader policy, the same for record files, resume and every input of `lvspec-report`:
  - every line is one JSON value; empty lines are skipped;
  - a line that is not JSON raises JSONLError naming `file:line`, except
  - the last line when it has no newline and is not complete JSON (a writer killed mid-line, or
    one still writing): it is skipped with a warning. A complete last line without its newline
    is used (some writers omit the final newline).

Writers append one whole line per record with a single write(2) under an exclusive lock (the
pinned `filelock` package; the lock file is `<file>.lock` beside it), then fsync, so a reader
never sees half a line from a live writer and a killed writer leaves the file as it was or
with the whole line. No torch import here.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from filelock import FileLock


class JSONLError(ValueError):
    """A line in the middle of a JSON Lines file is not JSON; the message names file:line."""


class TruncatedLineWarning(UserWarning):
    """The last line of a JSON Lines file is incomplete and was skipped."""


def _warn(message: str) -> None:
    warnings.warn(message, TruncatedLineWarning, stacklevel=3)


def truncated_message(path: str | os.PathLike, number: int) -> str:
    return (f"{path}:{number}: last line is truncated (no newline, not complete JSON): a writer was killed or is "
            "still running; the line is ignored")


def read_lines(path: str | os.PathLike, warn: Optional[Callable[[str], None]] = None) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-empty line of `path`, under the module's reader policy.

    `warn` receives the message about a skipped truncated last line (default: warnings.warn)."""
    lines = Path(path).read_bytes().split(b"\n")
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, absurd nesting
            if number == len(lines):  # the last line, without a newline after it
                (warn or _warn)(truncated_message(path, number))
                continue
            raise JSONLError(f"{path}:{number}: not a JSON line ({exc})") from None
        yield number, value


def lock(path: str | os.PathLike) -> FileLock:
    """The exclusive lock every writer of `path` holds while appending or repairing."""
    return FileLock(f"{path}.lock")


def dumps(value: Any) -> bytes:
    """One JSON line (UTF-8, compact, no NaN), newline included."""
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


def append_line(path: str | os.PathLike, value: Any) -> None:
    """Append `value` as one JSON line: a single write(2) of the whole line under the lock, then fsync."""
    line = dumps(value)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with lock(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:  # a regular file takes the whole line in one write; more only when the disk fills up
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)


def repair_tail(path: str | os.PathLike) -> int:
    """Make `path` end in a newline so that appends stay valid, under the reader policy: a last line
    without newline that is complete JSON gets its newline; one that is not is cut off.

    Returns the number of bytes dropped (0 when the file is missing or ends with a newline)."""
    if not Path(path).exists():
        return 0
    with lock(path):
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            keep, pos = size, size
            while pos > 0:  # scan back for the last newline
                start = max(0, pos - 65536)
                chunk = os.pread(fd, pos - start, start)
                if keep == size and chunk.endswith(b"\n"):
                    return 0
                nl = chunk.rfind(b"\n")
                if nl != -1:
                    keep = start + nl + 1
                    break
                keep, pos = 0, start
            tail = os.pread(fd, size - keep, keep)
            try:
                json.loads(tail)
            except (ValueError, RecursionError):
                os.ftruncate(fd, keep)
                dropped = size - keep
            else:  # a whole line that only lacks its newline
                os.pwrite(fd, b"\n", size)
                dropped = 0
            os.fsync(fd)
            return dropped
        finally:
            os.close(fd)
