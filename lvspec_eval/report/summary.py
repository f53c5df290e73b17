"""One summary row per group (task, split, method, target, drafter, settings), and its renderings.

Every run-level statistic is named and defined once in `lvspec_eval.glossary.METRICS` and computed
by `lvspec_eval.metrics.aggregate` over the row's successful samples; docs/report.md lists the row.
Each sample is compared with `ar` through its own paired_baseline fields, else through the `ar`
record of the same doc (filled into the sample's ar_* fields here). The task score and retention
come from lmms-eval's outputs. Bootstrap intervals resample the row's samples (percentile, fixed seed).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Optional

from lvspec_eval import __version__, glossary
from lvspec_eval.config import BACKEND_BUILTINS, METHODS, LVSpecArgs
from lvspec_eval.metrics import aggregate
from lvspec_eval.metrics.aggregate import CONFIDENCE, bootstrap_ratio, mean, ratio
from lvspec_eval.report.pairing import Group

SUMMARY_SCHEMA = "lvspec-summary"
#: 2: run-level statistics carry their aggregation in their name (tau_pooled, speedup_decode_pooled,
#: exact_match_ar_mean, ...); check reads version 1 files through V1_NAMES.
SUMMARY_SCHEMA_VERSION = 2
FORMATS = ("table", "markdown", "csv", "latex", "json")

#: Fields that identify a row (the key `check` matches baseline rows by).
KEY_FIELDS = ("task", "split", "method", "target", "draft", "settings", "dtype")
#: Row fields of schema version 1 that were renamed in version 2 (old -> new).
V1_NAMES = {
    "acceptance_rate": "acceptance_rate_pooled",
    "speedup_decode": "speedup_decode_pooled", "speedup_decode_ci": "speedup_decode_pooled_ci",
    "speedup_e2e": "speedup_e2e_pooled", "speedup_e2e_ci": "speedup_e2e_pooled_ci",
    "exact_match_ar": "exact_match_ar_mean", "edit_sim_ar": "edit_sim_ar_mean",
}
#: The definitions written into summary and leaderboard files (glossary.METRICS).
ACCOUNTING = dict(glossary.METRICS)


@dataclass
class Summary:
    rows: list[dict[str, Any]]  # one per group, JSON-ready (see docs/report.md)
    groups: list[Group]  # same order: the per-sample data behind each row (plots use it)
    notes: list[str] = field(default_factory=list)
    resamples: int = 1000
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SUMMARY_SCHEMA,
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "generator": f"lvspec-report {__version__}",
            "accounting": ACCOUNTING,
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "confidence": CONFIDENCE,
                          "interval": "percentile", "unit": "sample"},
            "rows": self.rows,
            "notes": self.notes,
        }


# -- one row --------------------------------------------------------------------------------------

def settings_label(method: str, params: dict[str, Any], dtype: str) -> str:
    """Short settings text: K, then the params that differ from the method's defaults (its rule_params
    under default args, e.g. the pruned drafter of `lvspec`), an unpruned drafter where the method
    prunes by default, then a non-default dtype."""
    defaults = LVSpecArgs()
    method_defaults = defaults.replace(method=method).rule_params() if method in METHODS else {}
    parts = []
    if "num_draft_tokens" in params:
        parts.append(f"K={params['num_draft_tokens']}")
    for name, value in params.items():
        default = method_defaults[name] if name in method_defaults else getattr(defaults, name, None)
        if name != "num_draft_tokens" and default != value:
            parts.append(f"{name}={value}")
    if "draft_video_keep" in method_defaults and "draft_video_keep" not in params:
        parts.append("draft_video_keep=1.0")
    if dtype not in {b.dtype for b in BACKEND_BUILTINS.values()}:  # a family's default dtype is not shown
        parts.append(dtype)
    return " ".join(parts) or ("-" if method == "ar" else "defaults")


def with_ar(record: dict[str, Any], ar_record: Optional[dict[str, Any]]) -> tuple[dict[str, Any], Optional[str]]:
    """A successful record with its `ar` side, and where that came from: its own paired_baseline fields
    ('paired_baseline'), else the ar_* fields filled from the separate `ar` run's record of the same
    doc ('ar run'), else the record as it is (None)."""
    if "ar_decode_s" in record:
        return record, "paired_baseline"
    if ar_record is None or ar_record.get("error"):
        return record, None
    from lvspec_eval.metrics.records import edit_similarity

    return {**record, "ar_decode_s": ar_record["decode_s"], "ar_total_s": ar_record["total_s"],
            "ar_new_tokens": ar_record["new_tokens"], "ar_tokens": ar_record["tokens"],
            "exact_match_ar": record["tokens"] == ar_record["tokens"] and record["text"] == ar_record["text"],
            "edit_sim_ar": edit_similarity(record["tokens"], ar_record["tokens"])}, "ar run"


def score_fields(group: Group, resamples: int, seed: int) -> tuple[dict[str, Any], list[str]]:
    """score, ar_score, retention (+ interval) of a group, and notes on what could not be computed."""
    s, ar = group.scores, group.ar_scores
    out: dict[str, Any] = {"metric": s.metric, "score": None, "score_source": None, "ar_score": None,
                           "retention": None, "retention_ci": None, "retention_pairs": 0}
    notes: list[str] = []
    docs = list(group.records)
    mine: list[float] = []
    if s.per_sample is not None:
        mine = [s.per_sample[d] for d in docs if d in s.per_sample]
        out["score"], out["score_source"] = mean(mine), "samples" if mine else None
    if out["score"] is None and s.aggregate is not None:
        out["score"], out["score_source"] = s.aggregate, "results"
    if out["score"] is None:
        notes.append("no task score: give the lmms-eval *_results.json and *_samples_<task>.jsonl of this run")
        return out, notes
    if s.higher_is_better is False:
        notes.append(f"metric {s.metric} is lower-is-better: retention is still score / ar score")
    if group.key.method == "ar":  # its own baseline
        out["ar_score"], out["retention"] = out["score"], ratio(out["score"], out["score"])
        if out["retention"] is None:
            notes.append("retention undefined: the ar score is 0")
        elif out["score_source"] == "samples":
            out["retention_ci"], out["retention_pairs"] = [1.0, 1.0], len(mine)
        return out, notes
    if ar.runs == 0:
        why = ("the records carry paired ar timings and outputs but no ar task score"
               if any(r.get("paired_baseline") for r in group.records.values()) else "no ar task score")
        notes.append(f"retention unknown: {why}; give the lmms-eval outputs (results and samples) of an ar run "
                     f"of task {group.task} with target {group.key.target}, dtype {group.key.dtype}")
        return out, notes
    if ar.metric != s.metric:
        notes.append(f"retention unknown: this run scores {s.metric}, the ar run {ar.metric}")
        return out, notes
    if s.per_sample is not None and ar.per_sample is not None:
        paired = [d for d in docs if d in s.per_sample and d in ar.per_sample]
        mine = [s.per_sample[d] for d in paired]
        theirs = [ar.per_sample[d] for d in paired]
        out["ar_score"] = mean(theirs)
        out["retention"] = ratio(sum(mine), sum(theirs)) if paired else None
        out["retention_ci"] = bootstrap_ratio(mine, theirs, resamples, seed) if out["retention"] is not None else None
        out["retention_pairs"] = len(paired)
        if not paired:
            notes.append("retention unknown: no doc has both a score and an ar score")
    elif s.aggregate is not None and ar.aggregate is not None:
        out["ar_score"] = ar.aggregate
        out["retention"] = ratio(s.aggregate, ar.aggregate)
        notes.append("retention from aggregate scores (no numeric per-sample scores): no interval")
    else:
        notes.append("retention unknown: the ar run's score is not available per sample nor as a single aggregate")
    if out["ar_score"] == 0:
        notes.append("retention undefined: the ar score is 0")
    return out, notes


#: Row fields of the acceptance statistics (aggregate.STATISTICS), in row order.
ACCEPTANCE_FIELDS = ("tau_mean", "tau_median", "tau_pooled", "tau_excl_mean", "tau_excl_pooled",
                     "acceptance_rate_pooled", "acceptance_exact", "acceptance_loose", "acceptance_shift")
#: Row fields of the comparison with `ar` (aggregate.STATISTICS), in row order.
AR_FIELDS = ("speedup_decode_pooled", "speedup_decode_median", "speedup_e2e_pooled", "speedup_e2e_median",
             "token_rate_speedup_pooled", "token_rate_speedup_median", "new_tokens_mean", "ar_new_tokens_mean",
             "exact_match_ar_mean", "edit_sim_ar_mean")


def summarize_group(group: Group, resamples: int, seed: int) -> tuple[dict[str, Any], list[str]]:
    key = group.key
    records = list(group.records.values())
    ok = aggregate.successful(records)
    notes: list[str] = []
    versions = sorted({str(r.get("lvspec_eval_version")) for r in records})
    if len(versions) > 1:
        notes.append(f"records of lvspec-eval versions {', '.join(versions)} are mixed in this row")
    row: dict[str, Any] = {
        "task": group.task, "split": group.split, "method": key.method, "target": key.target,
        "draft": key.draft, "settings": key.params, "dtype": key.dtype,
        "settings_label": settings_label(key.method, key.params, key.dtype),
        "samples": len(records), "failed": len(records) - len(ok),
    }

    # 1. Acceptance, over every successful sample.
    row.update(aggregate.compute(ok, ACCEPTANCE_FIELDS))

    # 2. Speedup, token rate and fidelity against `ar`, sample by sample.
    if key.method == "ar":  # its own baseline
        lengths = aggregate.mean([float(r["new_tokens"]) for r in ok])
        row.update(speedup_pairs=len(ok), speedup_source="self", fidelity_pairs=len(ok),
                   new_tokens_mean=lengths, ar_new_tokens_mean=lengths, exact_match_ar_mean=1.0, edit_sim_ar_mean=1.0)
        for name in ("speedup_decode", "speedup_e2e", "token_rate_speedup"):
            row.update({f"{name}_pooled": 1.0, f"{name}_pooled_ci": [1.0, 1.0], f"{name}_median": 1.0})
    else:
        compared, sources, other_limit = [], set(), 0
        for r in ok:
            other = group.ar_records.get(r["doc_id"])
            view, source = with_ar(r, other)
            if source is None:
                continue
            if source == "ar run" and other.get("max_new_tokens") != r.get("max_new_tokens"):
                other_limit += 1
            compared.append(view)
            sources.add(source)
        if other_limit:
            notes.append(f"{other_limit} sample(s) were decoded with another max_new_tokens than in the ar run")
        row.update(speedup_pairs=len(compared), speedup_source=" + ".join(sorted(sources)) or None,
                   fidelity_pairs=len(compared))
        row.update(aggregate.compute(compared, AR_FIELDS))
        row.update(speedup_decode_pooled_ci=aggregate.speedup_pooled_ci(compared, "decode", resamples, seed),
                   speedup_e2e_pooled_ci=aggregate.speedup_pooled_ci(compared, "e2e", resamples, seed),
                   token_rate_speedup_pooled_ci=aggregate.token_rate_speedup_pooled_ci(compared, resamples, seed))
        if ok and not compared:
            notes.append(f"no ar timings: decode with paired_baseline=true, or give the records of an ar run "
                         f"of task {group.task} (split {group.split}) with target {key.target}, dtype {key.dtype}")
        elif len(compared) < len(ok):
            notes.append(f"{len(ok) - len(compared)} of {len(ok)} successful samples have no ar timings")

    # 3. Task score and retention.
    scores, score_notes = score_fields(group, resamples, seed)
    row.update(scores)
    notes += score_notes

    # 4. Provenance (the leaderboard reads it).
    max_new = sorted({r["max_new_tokens"] for r in ok if "max_new_tokens" in r})
    row.update(
        family=next((r["family"] for r in records if r.get("family")), None),
        devices=sorted({str(r["device"]) for r in records if r.get("device") is not None}),
        device_names=sorted({str(r["device_name"]) for r in records if r.get("device_name")}),
        world_size=max((int(r.get("world_size") or 1) for r in records), default=1),
        lvspec_eval_versions=versions,
        lmms_eval_version=group.scores.lmms_eval_version,
        max_new_tokens=max_new[0] if len(max_new) == 1 else (max_new or None),
        notes=notes,
    )
    return row, notes


def counterpart_fields(group: Group, groups: list[Group], resamples: int,
                       seed: int) -> tuple[dict[str, Any], list[str]]:
    """The lossless counterpart of a loose row (same task, split, target, drafter, drafter input; strict
    rule: RunKey.lossless) and tau_ratio against it, paired by doc, with its interval."""
    out: dict[str, Any] = {"counterpart": None, "counterpart_settings": None, "tau_ratio": None,
                           "tau_ratio_ci": None, "tau_ratio_pairs": 0}
    want = group.key.lossless()
    if want is None:
        return out, []
    out["counterpart"], out["counterpart_settings"] = want.method, want.params
    other = next((g for g in groups if (g.task, g.split, g.key) == (group.task, group.split, want)), None)
    if other is None:
        return out, [f"no tau_ratio: no {want.method} run with the same drafter input ({want.settings}) of task "
                     f"{group.task}, split {group.split}, drafter {want.draft}: run it beside this one"]
    value, ci, pairs = aggregate.tau_ratio(list(group.records.values()), list(other.records.values()), resamples,
                                           seed)
    out.update(tau_ratio=value, tau_ratio_ci=ci, tau_ratio_pairs=pairs)
    return out, [] if value is not None else [f"no tau_ratio: no doc has a tau in both this run and the {want.method} run"]


def summarize(groups: list[Group], *, resamples: int = 1000, seed: int = 0) -> Summary:
    summary = Summary(rows=[], groups=groups, resamples=resamples, seed=seed)
    for group in groups:
        row, notes = summarize_group(group, resamples, seed)
        fields, more = counterpart_fields(group, groups, resamples, seed)
        row.update(fields)
        row["notes"] = notes = notes + more
        summary.rows.append(row)
        summary.notes += [f"{row_label(row)}: {note}" for note in dict.fromkeys(notes)]
    return summary


# -- rendering ----------------------------------------------------------------------------------

def short_model(name: Optional[str]) -> str:
    """The last two path components of a model name ('Qwen/Qwen2.5-VL-7B-Instruct' stays as it is)."""
    return "-" if name is None else "/".join(PurePath(name).parts[-2:])


def row_label(row: dict[str, Any]) -> str:
    return f"{row['task']} {row['method']} {short_model(row['target'])} [{row['settings_label']}]"


def _num(value: Optional[float], digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def _with_ci(value: Optional[float], ci: Optional[list[float]], digits: int = 2, suffix: str = "",
             scale: float = 1.0) -> str:
    if value is None:
        return "-"
    text = f"{value * scale:.{digits}f}{suffix}"
    return text if ci is None else f"{text} [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"


def _acceptance(row: dict[str, Any]) -> str:
    if row["acceptance_rate_pooled"] is None:
        return "-"
    return (f"{row['acceptance_rate_pooled']:.3f} ({row['acceptance_exact']:.3f}/"
            f"{row['acceptance_loose']:.3f}/{row['acceptance_shift']:.3f})")


def _tokens(row: dict[str, Any]) -> str:
    if row["new_tokens_mean"] is None:
        return "-"
    return f"{row['new_tokens_mean']:.1f} ({_num(row['ar_new_tokens_mean'], 1)})"


#: (header, row fields shown, cell) of the human-readable formats (table, markdown, latex, the HTML
#: page, whose header tooltips are the fields' glossary definitions); CSV and JSON carry every field.
DISPLAY_COLUMNS = (
    ("task", (), lambda r: r["task"]),
    ("method", (), lambda r: r["method"]),
    ("target", (), lambda r: short_model(r["target"])),
    ("draft", (), lambda r: short_model(r["draft"])),
    ("settings", (), lambda r: r["settings_label"]),
    ("n", (), lambda r: str(r["samples"])),
    ("failed", (), lambda r: str(r["failed"])),
    ("tau mean/med", ("tau_mean", "tau_median"),
     lambda r: "-" if r["tau_mean"] is None else f"{r['tau_mean']:.2f} / {r['tau_median']:.2f}"),
    ("tau pooled", ("tau_pooled",), lambda r: _num(r["tau_pooled"])),
    ("tau_excl mean", ("tau_excl_mean",), lambda r: _num(r["tau_excl_mean"])),
    ("tau ratio [95% CI] (vs)", ("tau_ratio",),
     lambda r: "-" if r.get("counterpart") is None
     else f"{_with_ci(r.get('tau_ratio'), r.get('tau_ratio_ci'), suffix='x')} ({r['counterpart']})"),
    ("accept (exact/loose/shift)", ("acceptance_rate_pooled", "acceptance_exact", "acceptance_loose",
                                    "acceptance_shift"), _acceptance),
    ("tokens (ar)", ("new_tokens_mean", "ar_new_tokens_mean"), _tokens),
    ("speedup dec [95% CI]", ("speedup_decode_pooled",),
     lambda r: _with_ci(r["speedup_decode_pooled"], r["speedup_decode_pooled_ci"], suffix="x")),
    ("med dec", ("speedup_decode_median",), lambda r: _num(r["speedup_decode_median"], suffix="x")),
    ("token rate [95% CI]", ("token_rate_speedup_pooled",),
     lambda r: _with_ci(r["token_rate_speedup_pooled"], r["token_rate_speedup_pooled_ci"], suffix="x")),
    ("speedup e2e [95% CI]", ("speedup_e2e_pooled",),
     lambda r: _with_ci(r["speedup_e2e_pooled"], r["speedup_e2e_pooled_ci"], suffix="x")),
    ("med e2e", ("speedup_e2e_median",), lambda r: _num(r["speedup_e2e_median"], suffix="x")),
    ("EM ar", ("exact_match_ar_mean",), lambda r: _num(r["exact_match_ar_mean"], 3)),
    ("edit sim ar", ("edit_sim_ar_mean",), lambda r: _num(r["edit_sim_ar_mean"], 3)),
    ("score", ("score",), lambda r: "-" if r["score"] is None else f"{r['score']:.4g}"),
    ("retention % [95% CI]", ("retention",),
     lambda r: _with_ci(r["retention"], r["retention_ci"], digits=1, scale=100.0)),
)


def column_title(fields: tuple[str, ...]) -> str:
    """The glossary definitions of a display column's fields (the HTML header's tooltip)."""
    return "; ".join(f"{name}: {glossary.METRICS[name]}" for name in fields)


_TABLEFMT = {"table": "simple", "markdown": "github", "latex": "latex_booktabs", "html": "html"}


def render_table(rows: list[dict[str, Any]], fmt: str) -> str:
    """The display columns of `rows` in a tabulate format (table, markdown, latex, html)."""
    from tabulate import tabulate

    cells = [[cell(r) for _, _, cell in DISPLAY_COLUMNS] for r in rows]
    return tabulate(cells, headers=[h for h, _, _ in DISPLAY_COLUMNS], tablefmt=_TABLEFMT[fmt], disable_numparse=True)


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as flat CSV cells: intervals split into _lo/_hi, settings as JSON, lists joined by ';'."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name == "notes":
            out[name] = " | ".join(value)
        elif name.endswith("_ci"):
            out[f"{name}_lo"], out[f"{name}_hi"] = value if value else (None, None)
        elif isinstance(value, dict):
            out[name] = json.dumps(value, sort_keys=True)
        elif isinstance(value, list):
            out[name] = ";".join(map(str, value))
        else:
            out[name] = value
    return out


def render(summary: Summary, fmt: str) -> str:
    """The summary as text in one of FORMATS."""
    if fmt == "json":
        return json.dumps(summary.to_json(), indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        flat = [flat_row(r) for r in summary.rows]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(flat[0]) if flat else list(KEY_FIELDS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat)
        return buf.getvalue()
    if fmt not in ("table", "markdown", "latex"):
        raise ValueError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    text = render_table(summary.rows, fmt) + "\n"
    if fmt == "table" and summary.notes:
        text += "\nnotes:\n" + "".join(f"  - {note}\n" for note in summary.notes)
    elif fmt == "markdown" and summary.notes:
        text += "\nNotes:\n\n" + "".join(f"- {note}\n" for note in summary.notes)
    return text
