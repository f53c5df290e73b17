"""How `lvspec-report` reads a JSON Lines input: the project's one reader policy
(`lvspec_eval.metrics.jsonl`), with its warnings collected for the CLI and a malformed line
raised as ReportInputError naming file:line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from lvspec_eval.metrics import jsonl


class ReportInputError(ValueError):
    """An input file cannot be used; the message names file:line and what is wrong."""


def json_lines(path: Path, warnings: list[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-empty line; a truncated last line is skipped with a warning."""
    try:
        yield from jsonl.read_lines(path, warn=warnings.append)
    except jsonl.JSONLError as exc:
        raise ReportInputError(str(exc)) from None
