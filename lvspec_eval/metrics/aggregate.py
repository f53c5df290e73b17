"""Run-level statistics of per-sample records, each computed in one place under the one name the
glossary gives it (`lvspec_eval.glossary.METRICS`): `lvspec-report`'s summary, the leaderboard,
the testbed sweep, the benchmarks and the backend's results.json block all call these.

Records are the dicts of `lvspec_eval.metrics.schema`; only successful ones (no `error`) count.
Speedup, token-rate and fidelity statistics read each record's paired `ar` fields (`ar_decode_s`,
`ar_total_s`, `ar_new_tokens`, `exact_match_ar`, `edit_sim_ar`): written by the backend with
`paired_baseline=true`, or filled in by the report from a separate `ar` run. No torch import.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, Optional, Sequence

import numpy as np

Records = Sequence[dict[str, Any]]
CONFIDENCE = 0.95


# -- helpers --------------------------------------------------------------------------------------

def successful(records: Records) -> list[dict[str, Any]]:
    return [r for r in records if not r.get("error")]


def mean(values: Sequence[float]) -> Optional[float]:
    return statistics.fmean(values) if values else None


def median(values: Sequence[float]) -> Optional[float]:
    return float(statistics.median(values)) if values else None


def ratio(num: float, den: float) -> Optional[float]:
    return num / den if den else None


def values(records: Records, name: str) -> list[float]:
    """The non-null values of per-sample field `name` over the successful records."""
    return [float(r[name]) for r in successful(records) if r.get(name) is not None]


def compared(records: Records) -> list[dict[str, Any]]:
    """Successful records that carry their `ar` side (timings, tokens, fidelity)."""
    return [r for r in successful(records) if r.get("ar_decode_s") is not None]


def timed(records: Records, kind: str = "decode") -> list[dict[str, Any]]:
    """Compared records with a positive method time (`decode_s` or `total_s` for kind e2e)."""
    time = "decode_s" if kind == "decode" else "total_s"
    return [r for r in compared(records) if r[time] > 0]


def _times(kind: str) -> tuple[str, str]:
    if kind not in ("decode", "e2e"):
        raise ValueError(f"speedup kind {kind!r}: decode or e2e")
    return ("ar_decode_s", "decode_s") if kind == "decode" else ("ar_total_s", "total_s")


# -- the statistics of glossary.METRICS -------------------------------------------------------------

def tau_mean(records: Records) -> Optional[float]:
    return mean(values(records, "tau"))


def tau_median(records: Records) -> Optional[float]:
    return median(values(records, "tau"))


def tau_pooled(records: Records) -> Optional[float]:
    ok = successful(records)
    return ratio(sum(r["new_tokens"] - 1 for r in ok if r["rounds"]), sum(r["rounds"] for r in ok))


def tau_excl_mean(records: Records) -> Optional[float]:
    return mean(values(records, "tau_excl"))


def _accepted(r: dict[str, Any]) -> int:
    return r["accepted_exact"] + r["accepted_loose"] + r["accepted_shift"]


def tau_excl_pooled(records: Records) -> Optional[float]:
    ok = successful(records)
    return ratio(sum(_accepted(r) for r in ok), sum(r["rounds"] for r in ok))


def acceptance_rate_pooled(records: Records) -> Optional[float]:
    ok = successful(records)
    return ratio(sum(_accepted(r) for r in ok), sum(r["proposed"] for r in ok))


def acceptance_share(records: Records, kind: str) -> Optional[float]:
    """sum(accepted_<kind>) / sum(proposed) for kind exact, loose or shift."""
    ok = successful(records)
    return ratio(sum(r[f"accepted_{kind}"] for r in ok), sum(r["proposed"] for r in ok))


def speedup_pooled(records: Records, kind: str = "decode") -> Optional[float]:
    ar_time, time = _times(kind)
    rows = timed(records, kind)
    return ratio(sum(r[ar_time] for r in rows), sum(r[time] for r in rows)) if rows else None


def speedup_median(records: Records, kind: str = "decode") -> Optional[float]:
    ar_time, time = _times(kind)
    return median([r[ar_time] / r[time] for r in timed(records, kind)])


def _rate_columns(records: Records) -> list[list[float]]:
    """(new_tokens - 1, decode_s, ar_new_tokens - 1, ar_decode_s) of the timed records."""
    rows = timed(records, "decode")
    return [[r["new_tokens"] - 1 for r in rows], [r["decode_s"] for r in rows],
            [r["ar_new_tokens"] - 1 for r in rows], [r["ar_decode_s"] for r in rows]]


def _rate_ratio(n: Any, d: Any, ar_n: Any, ar_d: Any) -> Any:
    return (n / d) / (ar_n / ar_d)


def token_rate_speedup_pooled(records: Records) -> Optional[float]:
    n, d, ar_n, ar_d = (sum(c) for c in _rate_columns(records))
    return _rate_ratio(n, d, ar_n, ar_d) if d and ar_n and ar_d else None


def token_rate_speedup_median(records: Records) -> Optional[float]:
    from lvspec_eval.metrics.records import token_rate_speedup

    rates = [token_rate_speedup(r["new_tokens"], r["decode_s"], r["ar_new_tokens"], r["ar_decode_s"])
             for r in timed(records, "decode")]
    return median([x for x in rates if x is not None])


def new_tokens_mean(records: Records) -> Optional[float]:
    return mean([float(r["new_tokens"]) for r in timed(records, "decode")])


def ar_new_tokens_mean(records: Records) -> Optional[float]:
    return mean([float(r["ar_new_tokens"]) for r in timed(records, "decode")])


def exact_match_ar_mean(records: Records) -> Optional[float]:
    return mean([float(bool(r["exact_match_ar"])) for r in compared(records)])


def edit_sim_ar_mean(records: Records) -> Optional[float]:
    return mean([float(r["edit_sim_ar"]) for r in compared(records)])


#: Every single-run statistic of glossary.METRICS (score and retention need lmms-eval's scores:
#: lvspec_eval.report.summary computes them with `bootstrap_ratio` below; tau_ratio compares two runs:
#: `tau_ratio` below).
STATISTICS: dict[str, Callable[[Records], Optional[float]]] = {
    "tau_mean": tau_mean,
    "tau_median": tau_median,
    "tau_pooled": tau_pooled,
    "tau_excl_mean": tau_excl_mean,
    "tau_excl_pooled": tau_excl_pooled,
    "acceptance_rate_pooled": acceptance_rate_pooled,
    "acceptance_exact": lambda rs: acceptance_share(rs, "exact"),
    "acceptance_loose": lambda rs: acceptance_share(rs, "loose"),
    "acceptance_shift": lambda rs: acceptance_share(rs, "shift"),
    "speedup_decode_pooled": lambda rs: speedup_pooled(rs, "decode"),
    "speedup_decode_median": lambda rs: speedup_median(rs, "decode"),
    "speedup_e2e_pooled": lambda rs: speedup_pooled(rs, "e2e"),
    "speedup_e2e_median": lambda rs: speedup_median(rs, "e2e"),
    "token_rate_speedup_pooled": token_rate_speedup_pooled,
    "token_rate_speedup_median": token_rate_speedup_median,
    "new_tokens_mean": new_tokens_mean,
    "ar_new_tokens_mean": ar_new_tokens_mean,
    "exact_match_ar_mean": exact_match_ar_mean,
    "edit_sim_ar_mean": edit_sim_ar_mean,
}


def compute(records: Records, names: Sequence[str] = tuple(STATISTICS)) -> dict[str, Optional[float]]:
    """{name: value} of the statistics `names` over `records`."""
    return {name: STATISTICS[name](records) for name in names}


# -- two runs: a loose method against its lossless counterpart ---------------------------------------

def paired_taus(records: Records, counterpart: Records) -> tuple[list[float], list[float]]:
    """Per-sample tau of `records` and of `counterpart` over the doc_ids where both have one (in the
    order of `records`)."""
    theirs = {r["doc_id"]: float(r["tau"]) for r in successful(counterpart) if r.get("tau") is not None}
    pairs = [(float(r["tau"]), theirs[r["doc_id"]]) for r in successful(records)
             if r.get("tau") is not None and r["doc_id"] in theirs]
    return [a for a, _ in pairs], [b for _, b in pairs]


def tau_ratio(records: Records, counterpart: Records, resamples: int = 0,
              seed: int = 0) -> tuple[Optional[float], Optional[list[float]], int]:
    """glossary.METRICS['tau_ratio']: (ratio, its bootstrap interval over the paired docs when
    `resamples` > 0, number of paired docs)."""
    mine, theirs = paired_taus(records, counterpart)
    value = ratio(sum(mine), sum(theirs)) if mine else None
    ci = bootstrap_ratio(mine, theirs, resamples, seed) if value is not None and resamples > 0 else None
    return value, ci, len(mine)


# -- bootstrap intervals ----------------------------------------------------------------------------

def bootstrap(columns: Sequence[Sequence[float]], statistic: Callable[..., Any], resamples: int,
              seed: int) -> Optional[list[float]]:
    """95% percentile interval of statistic(*column sums), resampling samples (rows) with replacement.

    Kept by hand rather than scipy.stats.bootstrap: the statistics here are functions of column
    sums of paired samples, every statistic of a row must use the same resample indices (one
    seed, numpy's default_rng), and 15 lines of numpy are clearer than adapting scipy's API (and
    its extra dependency) to that. Resamples whose statistic is not finite (a denominator summing
    to 0) are dropped. None when there is nothing to resample."""
    n = len(columns[0]) if columns else 0
    if n == 0 or resamples <= 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))  # [B, n]
    sums = [np.asarray(c, dtype=float)[idx].sum(axis=1) for c in columns]  # each [B]
    with np.errstate(divide="ignore", invalid="ignore"):
        stats = np.asarray(statistic(*sums), dtype=float)  # [B]
    stats = stats[np.isfinite(stats)]
    if not stats.size:
        return None
    tail = (1.0 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return [float(lo), float(hi)]


def bootstrap_ratio(num: Sequence[float], den: Sequence[float], resamples: int, seed: int) -> Optional[list[float]]:
    """Interval of sum(num) / sum(den) over paired entries."""
    return bootstrap([num, den], lambda a, b: a / b, resamples, seed)


def bootstrap_mean(values: Sequence[float], resamples: int, seed: int) -> Optional[list[float]]:
    """Interval of the mean of `values` (e.g. per-sample exact match or edit similarity)."""
    return bootstrap_ratio(values, [1.0] * len(values), resamples, seed)


def speedup_pooled_ci(records: Records, kind: str, resamples: int, seed: int) -> Optional[list[float]]:
    ar_time, time = _times(kind)
    rows = timed(records, kind)
    return bootstrap_ratio([r[ar_time] for r in rows], [r[time] for r in rows], resamples, seed)


def token_rate_speedup_pooled_ci(records: Records, resamples: int, seed: int) -> Optional[list[float]]:
    return bootstrap(_rate_columns(records), _rate_ratio, resamples, seed)
