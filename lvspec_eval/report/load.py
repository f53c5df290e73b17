"""Read the inputs of `lvspec-report` and pair them by (task, split, doc_id).

Inputs, given as files or folders (folders are searched recursively, in sorted order):

  lvspec records     *.jsonl whose lines carry `record_version` (lvspec_eval.metrics.records)
  lmms-eval results  <prefix>_results.json: aggregate scores, the task's metrics, config.model_args
  lmms-eval samples  <prefix>_samples_<task>.jsonl: one JSON line per doc with per-metric fields;
                     it belongs to the run of <prefix>_results.json in the same folder, which is
                     read even when not given (it names the run's method, models and settings)

A *run key* (method, target, draft, settings, dtype) names one decoding configuration: records
carry it, and an lmms-eval run of an lvspec backend gets it from its model_args. A *group* holds
the records of one (task, split, run key) and becomes one summary row. Each group is paired per
doc_id with
  - the records of the `ar` group of the same (task, split, target, dtype), and
  - the lmms-eval per-sample scores of its own run key and of that `ar` run key.

A malformed input raises ReportInputError naming file:line. Harmless oddities (a truncated last
line, a skipped file, a duplicate sample) are collected as warnings; the CLI prints them, and
treats them as errors under --strict. No torch import here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from lvspec_eval.config import BACKEND_BUILTINS, METHODS, ArgsError, LVSpecArgs

SUPPORTED_RECORD_VERSIONS = (1,)

#: Fields of every record, failed samples included.
BASE_FIELDS = ("record_version", "task", "split", "doc_id", "method", "target", "draft", "params", "dtype")
#: Fields of a successful sample (a failed one has `error` instead).
DECODE_FIELDS = ("new_tokens", "rounds", "tau", "tau_excl", "proposed", "accepted_exact", "accepted_loose",
                 "accepted_shift", "accepted_per_position", "prefill_s", "decode_s", "total_s", "tokens", "text")
#: Fields of a successful non-`ar` sample decoded with paired_baseline=true.
PAIRED_FIELDS = ("ar_tokens", "ar_text", "ar_decode_s", "ar_total_s", "exact_match_ar", "edit_sim_ar")
#: Fields that must be numbers when present (tau, tau_excl may be null: a ratio over zero rounds).
NUMBER_FIELDS = ("new_tokens", "rounds", "proposed", "accepted_exact", "accepted_loose", "accepted_shift",
                 "prefill_s", "decode_s", "total_s", "ar_decode_s", "ar_total_s", "edit_sim_ar")
NULLABLE_NUMBER_FIELDS = ("tau", "tau_excl")

RESULTS_SUFFIX = "_results.json"
SAMPLES_NAME = re.compile(r"^(?P<prefix>.+)_samples_(?P<task>.+)\.jsonl$")


class ReportInputError(ValueError):
    """An input file cannot be used; the message names file:line and what is wrong."""


@dataclass(frozen=True)
class RunKey:
    """One decoding configuration: what a summary row (with task and split) is about."""

    method: str
    target: str
    draft: Optional[str]  # None for `ar`
    settings: str  # the method's params (LVSpecArgs.rule_params) as canonical JSON
    dtype: str

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.settings)

    def ar(self) -> "RunKey":
        """The key of the `ar` baseline this configuration is compared with."""
        return RunKey("ar", self.target, None, "{}", self.dtype)

    def sort_key(self) -> tuple:
        order = METHODS.index(self.method) if self.method in METHODS else len(METHODS)
        return (self.target, self.dtype, order, self.method, self.draft or "", self.settings)


def canonical(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def record_key(record: dict[str, Any]) -> RunKey:
    return RunKey(record["method"], record["target"], record["draft"], canonical(record["params"]), record["dtype"])


@dataclass
class LmmsRun:
    """One lmms-eval run: its results file and the per-sample scores of its samples files."""

    path: Path
    key: Optional[RunKey]  # None: not an lvspec backend, never paired
    lmms_eval_version: Optional[str] = None
    metric: dict[str, str] = field(default_factory=dict)  # task -> metric used as the task score
    aggregate: dict[str, float] = field(default_factory=dict)  # task -> results[task]["<metric>,<filter>"]
    higher_is_better: dict[str, Optional[bool]] = field(default_factory=dict)
    split: dict[str, Optional[str]] = field(default_factory=dict)  # task -> split lmms-eval evaluated
    scores: dict[str, Optional[dict[Any, float]]] = field(default_factory=dict)  # task -> doc_id -> score
    # scores[task] is None when the samples hold no numeric per-sample value of the metric


@dataclass
class Inputs:
    records: list[tuple[str, dict[str, Any]]]  # ("file:line", record)
    runs: list[LmmsRun]
    warnings: list[str]


@dataclass
class TaskScores:
    """The task score of one run key on one task, from the lmms-eval runs that match it."""

    metric: Optional[str] = None
    per_sample: Optional[dict[Any, float]] = None  # doc_id -> score; None: no numeric per-sample values
    aggregate: Optional[float] = None  # results.json value (only when exactly one run matched)
    higher_is_better: Optional[bool] = None
    lmms_eval_version: Optional[str] = None
    runs: int = 0  # matching lmms-eval runs


@dataclass
class Group:
    """The records of one (task, split, run key), paired with the `ar` records and the task scores."""

    task: str
    split: str
    key: RunKey
    records: dict[Any, dict[str, Any]] = field(default_factory=dict)  # doc_id -> record, input order
    sources: dict[Any, str] = field(default_factory=dict)  # doc_id -> "file:line"
    ar_records: dict[Any, dict[str, Any]] = field(default_factory=dict)  # doc_id -> `ar` record, same task
    scores: TaskScores = field(default_factory=TaskScores)
    ar_scores: TaskScores = field(default_factory=TaskScores)

    @property
    def label(self) -> str:
        return f"{self.task}/{self.key.method} target={self.key.target} settings={self.key.settings}"


# -- finding and reading files ------------------------------------------------------------------

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


def json_lines(path: Path, warnings: list[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-empty line. A last line without its newline is
    a truncated write (a killed or live writer): used if it parses, else skipped with a warning."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        truncated = number == len(lines)  # no newline after it
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if truncated:
                warnings.append(f"{path}:{number}: last line is truncated (no newline, not complete JSON): "
                                "a writer was killed or is still running; the line is ignored")
                continue
            raise ReportInputError(f"{path}:{number}: not a JSON line ({exc})") from None
        yield number, value


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


def check_record(record: Any, where: str) -> None:
    """Raise ReportInputError unless `record` is a readable lvspec record."""
    if not isinstance(record, dict):
        raise ReportInputError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    version = record.get("record_version")
    if version is None:
        raise ReportInputError(f"{where}: no record_version: not an lvspec record")
    if version not in SUPPORTED_RECORD_VERSIONS:
        raise ReportInputError(
            f"{where}: record_version {version!r} (written by lvspec-eval {record.get('lvspec_eval_version', '?')}) "
            f"is not supported; this lvspec-report reads record_version "
            f"{', '.join(map(str, SUPPORTED_RECORD_VERSIONS))}: use the lvspec-eval version that wrote the records"
        )
    needed = BASE_FIELDS
    if not record.get("error"):
        needed += DECODE_FIELDS
        if record.get("paired_baseline") and record.get("method") != "ar":
            needed += PAIRED_FIELDS
    missing = [name for name in needed if name not in record]
    if missing:
        kind = "a failed" if record.get("error") else "a successful"
        raise ReportInputError(f"{where}: {kind} record lacks field(s) {', '.join(missing)}")
    for name in NUMBER_FIELDS + NULLABLE_NUMBER_FIELDS:
        value = record.get(name)
        if value is None and (name in NULLABLE_NUMBER_FIELDS or name not in record):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ReportInputError(f"{where}: field {name} is {value!r}, expected a number")
    if not isinstance(record["params"], dict):
        raise ReportInputError(f"{where}: field params is {record['params']!r}, expected an object")
    if record["method"] not in METHODS:
        raise ReportInputError(f"{where}: unknown method {record['method']!r}; known: {', '.join(METHODS)}")


def read_record_file(path: Path, warnings: list[str]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for number, record in json_lines(path, warnings):
        where = f"{path}:{number}"
        check_record(record, where)
        out.append((where, record))
    if not out:
        warnings.append(f"{path}: no complete records")
    return out


def parse_model_args(text: str) -> dict[str, str]:
    """lmms-eval's `--model_args` string 'a=1,b=x' as a dict of strings."""
    out = {}
    for item in text.split(","):
        if item.strip():
            name, _, value = item.partition("=")
            out[name.strip()] = value.strip()
    return out


def lmms_run_key(config: dict[str, Any], path: Path, warnings: list[str]) -> Optional[RunKey]:
    """The run key of an lmms-eval run of an lvspec backend (None for any other model)."""
    from lvspec_eval.lmms import BACKENDS

    model = config.get("model")
    if model not in BACKENDS:
        warnings.append(f"{path}: model {model!r} is not an lvspec backend ({', '.join(BACKENDS)}); "
                        "its scores are not paired with records")
        return None
    raw = config.get("model_args") or ""
    kwargs = parse_model_args(raw) if isinstance(raw, str) else dict(raw)
    try:
        args = LVSpecArgs.from_kwargs(**kwargs)
    except ArgsError as exc:
        raise ReportInputError(f"{path}: config.model_args are not valid lvspec model args: {exc}") from None
    draft = None if args.method == "ar" else args.draft_pretrained
    dtype = args.dtype or (BACKEND_BUILTINS[model].dtype if model in BACKEND_BUILTINS else None)  # records: resolved
    return RunKey(args.method, args.pretrained, draft, canonical(args.rule_params()), dtype)


def pick_metric(values: dict[str, Any], wanted: Optional[str]) -> Optional[tuple[str, float]]:
    """(metric, value) from results[task]: `wanted` when present, else the first numeric
    '<metric>,<filter>' entry that is not a standard error."""
    metrics = []
    for name_filter, value in values.items():
        name, _, filt = name_filter.partition(",")
        if not filt or "_stderr" in name or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        metrics.append((name, float(value)))
    for name, value in metrics:
        if name == wanted:
            return name, value
    return metrics[0] if metrics else None


def read_results(path: Path, metric: Optional[str], warnings: list[str]) -> LmmsRun:
    try:
        doc = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict) or not isinstance(doc.get("config"), dict):
        raise ReportInputError(f"{path}: not an lmms-eval results file (no 'results' and 'config' objects)")
    run = LmmsRun(path=path, key=lmms_run_key(doc["config"], path, warnings),
                  lmms_eval_version=doc.get("lmms_eval_version"))
    configs = doc.get("configs") or {}
    better = doc.get("higher_is_better") or {}
    for task, values in doc["results"].items():
        chosen = pick_metric(values, metric) if isinstance(values, dict) else None
        if chosen is None:
            continue  # a group entry or a task without numeric metrics
        name, value = chosen
        if metric and name != metric:
            warnings.append(f"{path}: task {task} has no metric {metric!r}; using its first metric {name!r}")
        run.metric[task] = name
        run.aggregate[task] = value
        run.higher_is_better[task] = (better.get(task) or {}).get(name)
        cfg = configs.get(task) or {}
        run.split[task] = cfg.get("test_split") or cfg.get("validation_split")
    return run


def sample_score(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def read_samples(path: Path, metric: str, warnings: list[str]) -> Optional[dict[Any, float]]:
    """doc_id -> the sample's value of `metric`; None when some sample has no numeric value."""
    scores: dict[Any, float] = {}
    for number, sample in json_lines(path, warnings):
        where = f"{path}:{number}"
        if not isinstance(sample, dict) or "doc_id" not in sample:
            raise ReportInputError(f"{where}: an lmms-eval sample must be a JSON object with doc_id")
        score = sample_score(sample.get(metric))
        if score is None:
            warnings.append(f"{where}: field {metric!r} is {type(sample.get(metric)).__name__}, not a number: "
                            "per-sample scores of this file are not used (the aggregate score is)")
            return None
        if sample["doc_id"] in scores:
            warnings.append(f"{where}: doc_id {sample['doc_id']!r} appears twice; the later line is used")
        scores[sample["doc_id"]] = score
    return scores


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


# -- pairing ------------------------------------------------------------------------------------

def task_scores(runs: list[LmmsRun], key: RunKey, task: str, split: str, warnings: list[str]) -> TaskScores:
    """The scores of run `key` on (task, split) from every lmms-eval run of that key."""
    found = TaskScores()
    matching = [r for r in runs if r.key == key and task in r.metric and r.split.get(task) in (None, split)]
    if not matching:
        return found
    found.runs = len(matching)
    found.metric = matching[0].metric[task]
    found.higher_is_better = matching[0].higher_is_better.get(task)
    found.lmms_eval_version = matching[-1].lmms_eval_version
    if any(r.metric[task] != found.metric for r in matching):
        warnings.append(f"lmms-eval runs of {task}/{key.method} use different metrics "
                        f"({', '.join(sorted({r.metric[task] for r in matching}))}); pass --metric")
        return TaskScores(runs=found.runs)
    if len(matching) == 1:
        found.aggregate = matching[0].aggregate[task]
    per_sample: dict[Any, float] = {}
    for run in matching:
        scores = run.scores.get(task)
        if scores is None:  # no samples file, or non-numeric per-sample values
            return found
        per_sample.update(scores)
    found.per_sample = per_sample
    return found


def build_groups(inputs: Inputs) -> list[Group]:
    """One group per (task, split, run key) of the records, paired with `ar` records and scores."""
    groups: dict[tuple[str, str, RunKey], Group] = {}
    for where, record in inputs.records:
        key = record_key(record)
        gkey = (record["task"], record["split"], key)
        group = groups.setdefault(gkey, Group(task=record["task"], split=record["split"], key=key))
        doc_id = record["doc_id"]
        if doc_id in group.records:
            inputs.warnings.append(f"{where}: duplicate sample doc_id {doc_id!r} of {group.label} "
                                   f"(first at {group.sources[doc_id]}); the later record is used")
        group.records[doc_id] = record
        group.sources[doc_id] = where
    for (task, split, key), group in groups.items():
        ar = groups.get((task, split, key.ar()))
        group.ar_records = ar.records if ar is not None else {}
        group.scores = task_scores(inputs.runs, key, task, split, inputs.warnings)
        group.ar_scores = task_scores(inputs.runs, key.ar(), task, split, inputs.warnings)
    return sorted(groups.values(), key=lambda g: (g.task, g.split, g.key.sort_key()))
