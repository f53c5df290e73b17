"""One summary row per group (task, split, method, target, drafter, settings), and its renderings.

Every column is defined in docs/report.md. In short, over the row's successful samples:
  tau_mean / tau_median   per-sample tau (tokens per target verification forward, bonus included)
  tau_excl_mean           per-sample tau_excl (accepted draft tokens per round)
  acceptance_*            pooled: sum(accepted_*) / sum(proposed); exact + loose + shift = rate
  speedup_*               over samples with `ar` timings: sum(ar time) / sum(method time), and the
                          median of per-sample ratios; decode (prefill excluded) and e2e (included)
  exact_match_ar, edit_sim_ar   mean over samples with an `ar` output to compare with
  score, retention        lmms-eval task score; retention = score / `ar` score over paired docs
Bootstrap intervals resample the row's paired samples (percentile, fixed seed).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Optional

import numpy as np

from lvspec_eval import __version__
from lvspec_eval.config import BACKEND_BUILTINS, LVSpecArgs
from lvspec_eval.report.load import Group

SUMMARY_SCHEMA = "lvspec-summary"
SUMMARY_SCHEMA_VERSION = 1
FORMATS = ("table", "markdown", "csv", "latex", "json")
CONFIDENCE = 0.95

#: Fields that identify a row (the key `check` matches baseline rows by).
KEY_FIELDS = ("task", "split", "method", "target", "draft", "settings", "dtype")

ACCOUNTING = {
    "tau": "tokens emitted per target verification forward, correction/bonus included (ar: 1.0)",
    "tau_excl": "accepted draft tokens per round (SpecVLM/LVSpec convention)",
    "acceptance": "pooled over samples: sum(accepted) / sum(proposed), split exact / loose / shift",
    "speedup": "ar time / method time for the same sample: ratio of summed times, and median of "
               "per-sample ratios; decode excludes prefill (paper convention), e2e includes it",
    "retention": "method task score / ar task score of the same task and target, over paired docs",
}


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


# -- statistics ---------------------------------------------------------------------------------

def mean(values: list[float]) -> Optional[float]:
    return statistics.fmean(values) if values else None


def median(values: list[float]) -> Optional[float]:
    return float(statistics.median(values)) if values else None


def ratio(num: float, den: float) -> Optional[float]:
    return num / den if den else None


def bootstrap_ratio(num: list[float], den: list[float], resamples: int, seed: int) -> Optional[list[float]]:
    """95% percentile interval of sum(num) / sum(den), resampling the paired entries with replacement.

    `resamples` draws of len(num) indices from numpy's default_rng(seed); resamples whose
    denominator sums to 0 are dropped. None when there is nothing to resample."""
    n = len(num)
    if n == 0 or resamples <= 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))  # [B, n]
    num_sums = np.asarray(num, dtype=float)[idx].sum(axis=1)  # [B]
    den_sums = np.asarray(den, dtype=float)[idx].sum(axis=1)  # [B]
    keep = den_sums != 0
    if not keep.any():
        return None
    tail = (1.0 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(num_sums[keep] / den_sums[keep], [tail, 100 - tail])
    return [float(lo), float(hi)]


# -- one row --------------------------------------------------------------------------------------

def settings_label(method: str, params: dict[str, Any], dtype: str) -> str:
    """Short settings text: K, then the params that differ from the project defaults, then a non-default dtype."""
    defaults = LVSpecArgs()
    parts = []
    if "num_draft_tokens" in params:
        parts.append(f"K={params['num_draft_tokens']}")
    for name, value in params.items():
        if name != "num_draft_tokens" and getattr(defaults, name, None) != value:
            parts.append(f"{name}={value}")
    if dtype not in {b.dtype for b in BACKEND_BUILTINS.values()}:  # a family's default dtype is not shown
        parts.append(dtype)
    return " ".join(parts) or ("-" if method == "ar" else "defaults")


def ar_pair(record: dict[str, Any], ar_record: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The `ar` side of one successful sample: from its paired_baseline fields, else from the
    separate `ar` run's record of the same doc (None when neither exists)."""
    if "ar_decode_s" in record:
        return {"source": "paired_baseline", "decode_s": record["ar_decode_s"], "total_s": record["ar_total_s"],
                "exact_match": bool(record["exact_match_ar"]), "edit_sim": float(record["edit_sim_ar"])}
    if ar_record is None or ar_record.get("error"):
        return None
    from lvspec_eval.metrics.records import edit_similarity

    return {"source": "ar run", "decode_s": ar_record["decode_s"], "total_s": ar_record["total_s"],
            "exact_match": record["tokens"] == ar_record["tokens"] and record["text"] == ar_record["text"],
            "edit_sim": edit_similarity(record["tokens"], ar_record["tokens"])}


def speedups(pairs: list[tuple[float, float]], resamples: int, seed: int) -> dict[str, Any]:
    """Speedup statistics of (ar time, method time) pairs; pairs with a zero method time are dropped."""
    pairs = [(a, m) for a, m in pairs if m > 0]
    ar_times = [a for a, _ in pairs]
    times = [m for _, m in pairs]
    return {
        "ratio": ratio(sum(ar_times), sum(times)) if pairs else None,
        "ci": bootstrap_ratio(ar_times, times, resamples, seed),
        "median": median([a / m for a, m in pairs]),
    }


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


def summarize_group(group: Group, resamples: int, seed: int) -> tuple[dict[str, Any], list[str]]:
    key = group.key
    records = list(group.records.values())
    ok = [r for r in records if not r.get("error")]
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

    # 1. Acceptance: per-sample tau, pooled acceptance rates.
    taus = [float(r["tau"]) for r in ok if r["tau"] is not None]
    proposed = sum(r["proposed"] for r in ok)
    row.update(
        tau_mean=mean(taus), tau_median=median(taus),
        tau_excl_mean=mean([float(r["tau_excl"]) for r in ok if r["tau_excl"] is not None]),
        acceptance_rate=ratio(sum(r["accepted_exact"] + r["accepted_loose"] + r["accepted_shift"] for r in ok), proposed),
        acceptance_exact=ratio(sum(r["accepted_exact"] for r in ok), proposed),
        acceptance_loose=ratio(sum(r["accepted_loose"] for r in ok), proposed),
        acceptance_shift=ratio(sum(r["accepted_shift"] for r in ok), proposed),
    )

    # 2. Speedup and fidelity against `ar`, sample by sample.
    if key.method == "ar":
        row.update(speedup_pairs=len(ok), speedup_source="self",
                   speedup_decode=1.0, speedup_decode_ci=[1.0, 1.0], speedup_decode_median=1.0,
                   speedup_e2e=1.0, speedup_e2e_ci=[1.0, 1.0], speedup_e2e_median=1.0,
                   fidelity_pairs=len(ok), exact_match_ar=1.0, edit_sim_ar=1.0)
    else:
        pairs, other_limit = [], 0
        for r in ok:
            other = group.ar_records.get(r["doc_id"])
            pair = ar_pair(r, other)
            if pair is None:
                continue
            if pair["source"] == "ar run" and other.get("max_new_tokens") != r.get("max_new_tokens"):
                other_limit += 1
            pairs.append((r, pair))
        if other_limit:
            notes.append(f"{other_limit} sample(s) were decoded with another max_new_tokens than in the ar run")
        decode = speedups([(p["decode_s"], r["decode_s"]) for r, p in pairs], resamples, seed)
        e2e = speedups([(p["total_s"], r["total_s"]) for r, p in pairs], resamples, seed)
        sources = sorted({p["source"] for _, p in pairs})
        row.update(speedup_pairs=len(pairs), speedup_source=" + ".join(sources) or None,
                   speedup_decode=decode["ratio"], speedup_decode_ci=decode["ci"], speedup_decode_median=decode["median"],
                   speedup_e2e=e2e["ratio"], speedup_e2e_ci=e2e["ci"], speedup_e2e_median=e2e["median"],
                   fidelity_pairs=len(pairs),
                   exact_match_ar=mean([float(p["exact_match"]) for _, p in pairs]),
                   edit_sim_ar=mean([p["edit_sim"] for _, p in pairs]))
        if ok and not pairs:
            notes.append(f"no ar timings: decode with paired_baseline=true, or give the records of an ar run "
                         f"of task {group.task} (split {group.split}) with target {key.target}, dtype {key.dtype}")
        elif len(pairs) < len(ok):
            notes.append(f"{len(ok) - len(pairs)} of {len(ok)} successful samples have no ar timings")

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


def summarize(groups: list[Group], *, resamples: int = 1000, seed: int = 0) -> Summary:
    summary = Summary(rows=[], groups=groups, resamples=resamples, seed=seed)
    for group in groups:
        row, notes = summarize_group(group, resamples, seed)
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
    if row["acceptance_rate"] is None:
        return "-"
    return (f"{row['acceptance_rate']:.3f} ({row['acceptance_exact']:.3f}/"
            f"{row['acceptance_loose']:.3f}/{row['acceptance_shift']:.3f})")


#: (header, cell) of the human-readable formats (table, markdown, latex); CSV and JSON carry every field.
DISPLAY_COLUMNS = (
    ("task", lambda r: r["task"]),
    ("method", lambda r: r["method"]),
    ("target", lambda r: short_model(r["target"])),
    ("draft", lambda r: short_model(r["draft"])),
    ("settings", lambda r: r["settings_label"]),
    ("n", lambda r: str(r["samples"])),
    ("failed", lambda r: str(r["failed"])),
    ("tau mean/med", lambda r: "-" if r["tau_mean"] is None else f"{r['tau_mean']:.2f} / {r['tau_median']:.2f}"),
    ("tau_excl", lambda r: _num(r["tau_excl_mean"])),
    ("accept (exact/loose/shift)", _acceptance),
    ("speedup dec [95% CI]", lambda r: _with_ci(r["speedup_decode"], r["speedup_decode_ci"], suffix="x")),
    ("med dec", lambda r: _num(r["speedup_decode_median"], suffix="x")),
    ("speedup e2e [95% CI]", lambda r: _with_ci(r["speedup_e2e"], r["speedup_e2e_ci"], suffix="x")),
    ("med e2e", lambda r: _num(r["speedup_e2e_median"], suffix="x")),
    ("EM ar", lambda r: _num(r["exact_match_ar"], 3)),
    ("edit sim ar", lambda r: _num(r["edit_sim_ar"], 3)),
    ("score", lambda r: "-" if r["score"] is None else f"{r['score']:.4g}"),
    ("retention % [95% CI]", lambda r: _with_ci(r["retention"], r["retention_ci"], digits=1, scale=100.0)),
)

_TABLEFMT = {"table": "simple", "markdown": "github", "latex": "latex_booktabs", "html": "html"}


def render_table(rows: list[dict[str, Any]], fmt: str) -> str:
    """The display columns of `rows` in a tabulate format (table, markdown, latex, html)."""
    from tabulate import tabulate

    cells = [[cell(r) for _, cell in DISPLAY_COLUMNS] for r in rows]
    return tabulate(cells, headers=[h for h, _ in DISPLAY_COLUMNS], tablefmt=_TABLEFMT[fmt], disable_numparse=True)


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
