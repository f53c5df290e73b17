"""Pair the inputs of `lvspec-report` into groups: one group per (task, split, run key) of the
records, which becomes one summary row. Each group is paired per doc_id with
  - the records of the `ar` group of the same (task, split, target, dtype), and
  - the lmms-eval per-sample scores of its own run key and of that `ar` run key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from lvspec_eval.report.inputs import Inputs
from lvspec_eval.report.lmms_files import LmmsRun
from lvspec_eval.report.runkey import RunKey, record_key


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
