"""Leaderboard JSON (schema `lvspec-leaderboard`, version 2; documented in docs/report.md).

One entry per summary row, i.e. per (task, method) for each target, drafter and settings, with
the models, settings, hardware, library versions and metrics; the document carries the
project's git revision and the environment the report was built in.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from lvspec_eval import __version__
from lvspec_eval.report.summary import ACCOUNTING, AR_FIELDS, ACCEPTANCE_FIELDS, CONFIDENCE, Summary

LEADERBOARD_SCHEMA = "lvspec-leaderboard"
LEADERBOARD_SCHEMA_VERSION = 2  # 2: the summary's version-2 metric names

#: Summary row fields copied into each entry's `metrics` (same names, same meaning).
METRIC_FIELDS = (
    "samples", "failed", *ACCEPTANCE_FIELDS, "speedup_pairs", "speedup_source", "fidelity_pairs", *AR_FIELDS,
    "speedup_decode_pooled_ci", "speedup_e2e_pooled_ci", "token_rate_speedup_pooled_ci",
    "metric", "score", "score_source", "ar_score", "retention", "retention_ci", "retention_pairs",
)
#: Installed versions recorded under `report_environment` (read from metadata, nothing imported).
LIBRARIES = ("lvspec-eval", "lmms-eval", "torch", "transformers", "numpy", "matplotlib")


def git_revision(repo: Optional[Path] = None) -> dict[str, Any]:
    """{'revision', 'dirty'} of the git checkout holding lvspec_eval (None values outside git: an installed
    wheel, or a package inside another project's git tree). git itself finds the checkout above the package
    folder; it counts only when its top holds lvspec-eval's pyproject.toml."""
    repo = repo or Path(__file__).resolve().parent

    def git(*args: str) -> Optional[str]:
        try:
            proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or not _is_lvspec_checkout(Path(top)):  # an install inside some other project's git tree
        return {"revision": None, "dirty": None}
    revision = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if revision else None
    return {"revision": revision, "dirty": None if status is None else bool(status)}


def _is_lvspec_checkout(top: Path) -> bool:
    try:
        return 'name = "lvspec-eval"' in (top / "pyproject.toml").read_text()
    except OSError:
        return False


def installed_versions() -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def entry(row: dict[str, Any], device_name: Optional[str] = None) -> dict[str, Any]:
    names = row["device_names"] or ([device_name] if device_name else [])
    return {
        "task": row["task"],
        "split": row["split"],
        "method": row["method"],
        "models": {"target": row["target"], "draft": row["draft"], "family": row["family"]},
        "settings": {"params": row["settings"], "dtype": row["dtype"], "max_new_tokens": row["max_new_tokens"]},
        "hardware": {"device": row["devices"][0] if len(row["devices"]) == 1 else row["devices"],
                     "device_name": names[0] if len(names) == 1 else (names or None),
                     "count": row["world_size"]},
        "software": {"lvspec_eval": row["lvspec_eval_versions"][0] if len(row["lvspec_eval_versions"]) == 1
                     else row["lvspec_eval_versions"],
                     "lmms_eval": row["lmms_eval_version"]},
        "metrics": {name: row[name] for name in METRIC_FIELDS},
        "notes": row["notes"],
    }


def build_leaderboard(summary: Summary, *, device_name: Optional[str] = None,
                      revision: Optional[str] = None) -> dict[str, Any]:
    git = git_revision()
    if revision is not None:
        git = {"revision": revision, "dirty": None}
    return {
        "schema": LEADERBOARD_SCHEMA,
        "schema_version": LEADERBOARD_SCHEMA_VERSION,
        "generator": f"lvspec-report {__version__}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git["revision"],
        "git_dirty": git["dirty"],
        "report_environment": installed_versions(),
        "accounting": ACCOUNTING,
        "bootstrap": {"resamples": summary.resamples, "seed": summary.seed, "confidence": CONFIDENCE,
                      "interval": "percentile", "unit": "sample"},
        "entries": [entry(row, device_name) for row in summary.rows],
    }
