"""lmms-eval's output files as `lvspec-report` inputs.

  <prefix>_results.json           aggregate scores, the task's metrics, config.model_args (the run key)
  <prefix>_samples_<task>.jsonl   one JSON line per doc with per-metric fields; it belongs to the run
                                  of <prefix>_results.json in the same folder

lmms-eval writes each metric of a task into `results[task]["<metric>,<filter>"]` and, per sample,
into a field named `<metric>`. Results of models other than the lvspec backends are kept without
a run key (never paired), with a warning.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lvspec_eval.config import BACKEND_BUILTINS, ArgsError, LVSpecArgs
from lvspec_eval.report.reading import ReportInputError, json_lines
from lvspec_eval.report.runkey import RunKey, canonical

RESULTS_SUFFIX = "_results.json"
SAMPLES_NAME = re.compile(r"^(?P<prefix>.+)_samples_(?P<task>.+)\.jsonl$")


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
