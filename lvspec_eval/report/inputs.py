"""Find and read the inputs of `lvspec-report`, given as files or folders (folders are searched
recursively, in sorted order):

  lvspec records     *.jsonl whose lines carry `record_version` (lvspec_eval.report.record_files)
  lmms-eval results  <prefix>_results.json                    (lvspec_eval.report.lmms_files)
  lmms-eval samples  <prefix>_samples_<task>.jsonl; its <prefix>_results.json in the same folder
                     is read even when not given (it names the run's method, models and settings)

A malformed input raises ReportInputError naming file:line. Harmless oddities (a truncated last
line, a skipped file, a duplicate sample) are collected as warnings; the CLI prints them, and
treats them as errors under --strict. Pairing the records into rows: lvspec_eval.report.pairing.
No torch import here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from lvspec_eval.report.lmms_files import RESULTS_SUFFIX, SAMPLES_NAME, LmmsRun, read_results, read_samples
from lvspec_eval.report.reading import ReportInputError
from lvspec_eval.report.record_files import read_record_file


@dataclass
class Inputs:
    records: list[tuple[str, dict[str, Any]]]  # ("file:line", record)
    runs: list[LmmsRun]
    warnings: list[str]


def find_files(paths: Iterable[str | Path]) -> list[tuple[Path, bool]]:
    """(file, given explicitly) for every file of `paths`, folders expanded, duplicates dropped."""
    out: list[tuple[Path, bool]] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ReportInputError(f"{raw}: no such file or folder")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json"))
            if not found:
                raise ReportInputError(f"{raw}: no .jsonl or .json files in this folder")
            items = [(p, False) for p in found]
        else:
            items = [(path, True)]
        for item, explicit in items:
            real = item.resolve()
            if real not in seen:
                seen.add(real)
                out.append((item, explicit))
    return out


def sniff(path: Path) -> str:
    """'records', 'samples', 'empty' or 'other', from the first non-empty line of a .jsonl file."""
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                break
        else:
            return "empty"
    try:
        first = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "records" if not SAMPLES_NAME.match(path.name) else "samples"  # let the reader say where
    if not isinstance(first, dict):
        return "other"
    if "record_version" in first or ("method" in first and "task" in first):
        return "records"
    if "doc_id" in first and SAMPLES_NAME.match(path.name):
        return "samples"
    return "other"


def load_inputs(paths: Iterable[str | Path], metric: Optional[str] = None) -> Inputs:
    """Read every input of `paths` (see the module docstring for what is read)."""
    warnings: list[str] = []
    records: list[tuple[str, dict[str, Any]]] = []
    results_paths: dict[Path, Path] = {}
    samples_paths: list[Path] = []
    for path, explicit in find_files(paths):
        if path.name.endswith(RESULTS_SUFFIX):
            results_paths[path.resolve()] = path
            continue
        kind = sniff(path) if path.suffix == ".jsonl" else "other"
        if kind == "records":
            records += read_record_file(path, warnings)
        elif kind == "samples":
            samples_paths.append(path)
        elif kind == "empty":
            warnings.append(f"{path}: empty file; skipped")
        elif explicit:
            raise ReportInputError(
                f"{path}: not an input of lvspec-report: give lvspec record files (*.jsonl with record_version), "
                "lmms-eval *_results.json and *_samples_<task>.jsonl files, or folders holding them")
        elif path.suffix == ".jsonl":
            warnings.append(f"{path}: neither lvspec records nor an lmms-eval samples file; skipped")

    # 1. A samples file belongs to the run of <prefix>_results.json next to it.
    owner: dict[Path, Path] = {}
    for path in samples_paths:
        results = path.with_name(SAMPLES_NAME.match(path.name)["prefix"] + RESULTS_SUFFIX)
        if not results.exists():
            raise ReportInputError(f"{path}: lmms-eval samples file without its results file {results.name} in the "
                                   "same folder; lvspec-report needs it to tell the run's method, models and settings")
        owner[path] = results.resolve()
        results_paths.setdefault(results.resolve(), results)
    runs = {real: read_results(path, metric, warnings) for real, path in sorted(results_paths.items())}

    # 2. Per-sample scores of the task's metric.
    for path in samples_paths:
        run = runs[owner[path]]
        task = SAMPLES_NAME.match(path.name)["task"]
        if run.key is None:
            continue
        if task not in run.metric:
            warnings.append(f"{path}: {run.path.name} has no numeric metric for task {task}; skipped")
            continue
        run.scores[task] = read_samples(path, run.metric[task], warnings)
    return Inputs(records=records, runs=list(runs.values()), warnings=warnings)
