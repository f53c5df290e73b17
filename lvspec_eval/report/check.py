"""`lvspec-report check`: compare the summary of the given runs with a baseline file.

The baseline is a `lvspec-report summary --format json` file or a leaderboard file. Rows are
matched by (task, split, method, target, draft, settings, dtype). Each threshold is one check
per baseline row:

  --max-tau-drop F      (baseline tau_mean - tau_mean) / baseline tau_mean  <= F
  --max-speedup-drop F  the same relative drop of speedup_decode_pooled, speedup_e2e_pooled or
                        token_rate_speedup_pooled (--speedup decode|e2e|token_rate)
  --min-retention R     retention >= R  (an unknown retention fails: it cannot be checked)
  --max-drop FIELD=F    the same relative drop check on any numeric summary field (DROP_FIELDS),
                        e.g. exact_match_ar_mean=0 or retention=1%; repeatable

Baselines of schema version 1 (before run-level names carried their aggregation) are read with
their fields renamed by summary.V1_NAMES (e.g. speedup_decode -> speedup_decode_pooled).

A baseline row absent from the runs fails as `missing` (unless --allow-missing); rows only in
the runs are listed as `new`. Exit code: 0 every check passed, 1 something regressed or is
missing, 2 unreadable input or bad arguments (see docs/report.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from lvspec_eval.report.leaderboard import LEADERBOARD_SCHEMA, LEADERBOARD_SCHEMA_VERSION
from lvspec_eval.report.reading import ReportInputError
from lvspec_eval.report.runkey import canonical
from lvspec_eval.report.summary import (KEY_FIELDS, SUMMARY_SCHEMA, SUMMARY_SCHEMA_VERSION, V1_NAMES, settings_label,
                                        short_model)

TOLERANCE = 1e-9  # float noise allowed on a threshold
#: Summary fields that --max-drop may watch (higher is better for each).
DROP_FIELDS = ("tau_mean", "tau_median", "tau_pooled", "tau_excl_mean", "tau_excl_pooled", "acceptance_rate_pooled",
               "acceptance_exact", "acceptance_loose", "acceptance_shift", "speedup_decode_pooled",
               "speedup_decode_median", "speedup_e2e_pooled", "speedup_e2e_median", "token_rate_speedup_pooled",
               "token_rate_speedup_median", "exact_match_ar_mean", "edit_sim_ar_mean", "score", "retention")
#: --speedup choice -> the summary field --max-speedup-drop watches.
SPEEDUP_FIELDS = {"decode": "speedup_decode_pooled", "e2e": "speedup_e2e_pooled", "token_rate": "token_rate_speedup_pooled"}
FAILING = ("REGRESSED", "unknown", "missing")


@dataclass
class Thresholds:
    max_tau_drop: Optional[float] = None
    max_speedup_drop: Optional[float] = None
    min_retention: Optional[float] = None
    speedup: str = "decode"  # which speedup --max-speedup-drop watches: a key of SPEEDUP_FIELDS
    max_drops: tuple[tuple[str, float], ...] = ()  # (field of DROP_FIELDS, largest relative drop)

    def any(self) -> bool:
        return bool(self.max_drops) or any(v is not None for v in (self.max_tau_drop, self.max_speedup_drop,
                                                                  self.min_retention))


@dataclass
class Finding:
    task: str
    method: str
    target: str
    settings: str
    check: str
    baseline: Optional[float]
    current: Optional[float]
    change: Optional[float]  # relative change (current - baseline) / baseline
    limit: str
    status: str  # ok | REGRESSED | unknown | missing | missing (allowed) | new | no baseline value


def parse_fraction(text: str) -> float:
    """'5%' -> 0.05, '0.05' -> 0.05; a bare number must lie in [0, 1] (write '150%' for 1.5)."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"{text!r} is not a fraction: write e.g. 5% or 0.05") from None
    if not raw.endswith("%") and not 0.0 <= value <= 1.0:
        raise ValueError(f"{text!r} is ambiguous: write a percentage (e.g. {raw}%) or a fraction in [0, 1]")
    if value < 0:
        raise ValueError(f"{text!r} is negative")
    return value


def parse_drop(text: str) -> tuple[str, float]:
    """'retention=1%' -> ('retention', 0.01); the field must be one of DROP_FIELDS."""
    name, sep, value = str(text).partition("=")
    name = name.strip()
    if not sep or name not in DROP_FIELDS:
        renamed = f" ({name} is now {V1_NAMES[name]})" if name in V1_NAMES else ""
        raise ValueError(f"{text!r}: write FIELD=F with FIELD one of {', '.join(DROP_FIELDS)} (e.g. retention=1%)"
                         + renamed)
    return name, parse_fraction(value)


def row_key(row: dict[str, Any]) -> tuple:
    return tuple(canonical(row[name]) if name == "settings" else row[name] for name in KEY_FIELDS)


def load_baseline(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a summary JSON file, or a leaderboard file's entries flattened to the same fields."""
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ReportInputError(f"{path}: baseline file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"{path}: baseline is not JSON ({exc})") from None
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema == SUMMARY_SCHEMA:
        rows = doc.get("rows")
    elif schema == LEADERBOARD_SCHEMA:
        try:
            rows = [{"task": e["task"], "split": e["split"], "method": e["method"], "target": e["models"]["target"],
                     "draft": e["models"]["draft"], "settings": e["settings"]["params"],
                     "dtype": e["settings"]["dtype"], **e["metrics"]} for e in doc["entries"]]
        except (KeyError, TypeError) as exc:
            raise ReportInputError(f"{path}: a leaderboard entry lacks {exc} (see docs/report.md, schema v1)") from None
    else:
        raise ReportInputError(f"{path}: not a baseline: expected the JSON of `lvspec-report summary --format json` "
                               f"(schema {SUMMARY_SCHEMA!r}) or of `lvspec-report leaderboard` "
                               f"(schema {LEADERBOARD_SCHEMA!r}); found schema {schema!r}")
    version = doc.get("schema_version")
    current = SUMMARY_SCHEMA_VERSION if schema == SUMMARY_SCHEMA else LEADERBOARD_SCHEMA_VERSION
    if version not in (1, current):
        raise ReportInputError(f"{path}: {schema} schema_version {version!r} is not supported (1, {current})")
    if not isinstance(rows, list):
        raise ReportInputError(f"{path}: baseline has no rows")
    if version == 1:
        rows = [{V1_NAMES.get(k, k): v for k, v in row.items()} if isinstance(row, dict) else row for row in rows]
    needed = KEY_FIELDS + ("tau_mean", "retention", "speedup_decode_pooled", "speedup_e2e_pooled")
    for i, row in enumerate(rows):
        missing = [name for name in needed if not isinstance(row, dict) or name not in row]
        if missing:
            raise ReportInputError(f"{path}: baseline row {i} lacks field(s) {', '.join(missing)}")
    return rows


def _relative(base: Optional[float], cur: Optional[float]) -> Optional[float]:
    return None if base in (None, 0) or cur is None else (cur - base) / base


def _finding(row: dict[str, Any], check: str, base: Optional[float], cur: Optional[float], limit: str,
             status: str) -> Finding:
    return Finding(row["task"], row["method"], short_model(row["target"]),
                   settings_label(row["method"], row["settings"], row["dtype"]),
                   check, base, cur, _relative(base, cur), limit, status)


def _drop_check(row: dict[str, Any], base_row: dict[str, Any], field: str, max_drop: float) -> Finding:
    base, cur = base_row.get(field), row[field]
    limit = f"drop <= {max_drop:.1%}"
    if base is None:
        return _finding(row, field, base, cur, limit, "no baseline value")
    if cur is None:
        return _finding(row, field, base, cur, limit, "unknown")
    drop = (base - cur) / base if base else 0.0
    return _finding(row, field, base, cur, limit, "REGRESSED" if drop > max_drop + TOLERANCE else "ok")


def compare(baseline: list[dict[str, Any]], current: list[dict[str, Any]], limits: Thresholds,
            allow_missing: bool = False) -> list[Finding]:
    """One finding per (baseline row, threshold), plus `missing` and `new` rows."""
    by_key = {row_key(r): r for r in current}
    base_keys = {row_key(r) for r in baseline}
    findings = []
    for base_row in baseline:
        row = by_key.get(row_key(base_row))
        if row is None:
            findings.append(_finding(base_row, "row", None, None, "present in the runs",
                                     "missing (allowed)" if allow_missing else "missing"))
            continue
        if limits.max_tau_drop is not None:
            findings.append(_drop_check(row, base_row, "tau_mean", limits.max_tau_drop))
        if limits.max_speedup_drop is not None:
            findings.append(_drop_check(row, base_row, SPEEDUP_FIELDS[limits.speedup], limits.max_speedup_drop))
        if limits.min_retention is not None:
            cur = row["retention"]
            status = "unknown" if cur is None else ("REGRESSED" if cur < limits.min_retention - TOLERANCE else "ok")
            findings.append(_finding(row, "retention", base_row["retention"], cur,
                                     f">= {limits.min_retention:g}", status))
        for name, max_drop in limits.max_drops:
            findings.append(_drop_check(row, base_row, name, max_drop))
    for row in current:
        if row_key(row) not in base_keys:
            findings.append(_finding(row, "row", None, None, "in the baseline", "new"))
    return findings


def failures(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.status in FAILING]


def _cell(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4g}"


def render_findings(findings: list[Finding], fmt: str = "table") -> str:
    """The findings as a table (table | markdown) with a verdict line, or as JSON."""
    bad = failures(findings)
    if fmt == "json":
        return json.dumps({"passed": not bad, "failed": len(bad), "checks": len(findings),
                           "findings": [asdict(f) for f in findings]}, indent=2) + "\n"
    from tabulate import tabulate

    headers = ["task", "method", "target", "settings", "check", "baseline", "current", "change", "limit", "status"]
    cells = [[f.task, f.method, f.target, f.settings, f.check, _cell(f.baseline), _cell(f.current),
              "-" if f.change is None else f"{f.change:+.1%}", f.limit, f.status] for f in findings]
    table = tabulate(cells, headers=headers, tablefmt="github" if fmt == "markdown" else "simple",
                     disable_numparse=True)
    verdict = (f"FAILED: {len(bad)} of {len(findings)} checks regressed or could not be checked"
               if bad else f"passed: {len(findings)} checks")
    return f"{table}\n\n{verdict}\n"
