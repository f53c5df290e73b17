"""Atomic writes for the testbed's caches and fixtures: readers (and concurrent writers) never see a
partial file or folder.

* :func:`atomic_file`: write to a temporary sibling, then ``os.replace`` it onto the path.
* :func:`published_dir`: fill a temporary sibling folder, then rename it into place; when another
  process published the same folder first, its copy wins and ours is dropped.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path`` (same suffix) for the caller to write; on success it
    replaces ``path``, on an error it is removed. The writer creates the file (the usual permissions)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def published_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final``; on success it is renamed to ``final`` (an empty
    ``final`` is replaced; if another process published ``final`` first, ours is dropped), on an error
    it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
