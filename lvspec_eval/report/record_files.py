"""lvspec record files as `lvspec-report` inputs: each line checked against the record schema
(`lvspec_eval.metrics.schema`): a supported record_version, the required fields of the record's
groups, every known field of its JSON kind, a known method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lvspec_eval.config import METHODS
from lvspec_eval.metrics import schema
from lvspec_eval.report.reading import ReportInputError, json_lines

_KIND_TEXT = {"int": "an integer", "number": "a number", "bool": "true or false", "string": "a string",
              "object": "an object", "list[int]": "a list of integers", "list[string]": "a list of strings",
              "int|string": "an integer or a string"}


def check_record(record: Any, where: str) -> None:
    """Raise ReportInputError unless `record` is a readable lvspec record."""
    if not isinstance(record, dict):
        raise ReportInputError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    version = record.get("record_version")
    if version is None:
        raise ReportInputError(f"{where}: no record_version: not an lvspec record")
    if version not in schema.SUPPORTED_RECORD_VERSIONS:
        raise ReportInputError(
            f"{where}: record_version {version!r} (written by lvspec-eval {record.get('lvspec_eval_version', '?')}) "
            f"is not supported; this lvspec-report reads record_version "
            f"{', '.join(map(str, schema.SUPPORTED_RECORD_VERSIONS))}: use the lvspec-eval version that wrote the "
            "records"
        )
    missing = [name for name in schema.required(record) if name not in record]
    if missing:
        kind = "a failed" if record.get("error") else "a successful"
        raise ReportInputError(f"{where}: {kind} record lacks field(s) {', '.join(missing)}")
    for name, value, kind in schema.wrong_kinds(record):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ReportInputError(f"{where}: field {name} is {shown}, expected {_KIND_TEXT[kind]}"
                               + (" or null" if schema.FIELDS[name].nullable else ""))
    if record["method"] not in METHODS:
        raise ReportInputError(f"{where}: unknown method {record['method']!r}; known: {', '.join(METHODS)}")


def read_record_file(path: Path, warnings: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """("file:line", record) of every record of `path`, each checked."""
    out = []
    for number, record in json_lines(path, warnings):
        where = f"{path}:{number}"
        check_record(record, where)
        out.append((where, record))
    if not out:
        warnings.append(f"{path}: no complete records")
    return out
