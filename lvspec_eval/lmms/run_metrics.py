"""The run's block in lmms-eval's results.json (`throughput`), from the per-sample records.

lmms-eval turns what a backend passes to `log_metrics` into results.json's `throughput` block and
the CLI's Throughput Summary table: `total_gen_tokens`, `total_elapsed_time`, `avg_speed`,
`avg_latency` (= total_elapsed_time / total_requests) and `avg_<key>` for every other number
passed. Rank 0 writes results.json from its own process, so under data parallel every rank
first gathers the other ranks' records: the block covers the whole run.

Every `avg_<key>` row is the mean, over the run's successful samples, of the record field `<key>`
(`lvspec_eval.metrics.schema`; vLLM's names read from `speculative_decoding_stats`); a key no
sample has is left out. Run-level pooled statistics (tau_pooled, speedup_decode_pooled, ...)
are `lvspec-report`'s, not this block's.
"""

from __future__ import annotations

from typing import Any, Optional

from lvspec_eval.metrics.aggregate import mean, successful

#: results.json `throughput.avg_<key>` -> the per-sample value averaged (None: the sample has none).
RUN_MEANS: dict[str, Any] = {
    "tau": lambda r: r.get("tau"),
    "tau_excl": lambda r: r.get("tau_excl"),
    "mean_acceptance_length": lambda r: (r.get("speculative_decoding_stats") or {}).get("mean_acceptance_length"),
    "draft_acceptance_rate": lambda r: (r.get("speculative_decoding_stats") or {}).get("draft_acceptance_rate"),
    "new_tokens": lambda r: r.get("new_tokens"),
    "ar_new_tokens": lambda r: r.get("ar_new_tokens"),
    "speedup_decode": lambda r: r.get("speedup_decode"),
    "speedup_e2e": lambda r: r.get("speedup_e2e"),
    "token_rate_speedup": lambda r: r.get("token_rate_speedup"),
    "exact_match_ar": lambda r: None if r.get("exact_match_ar") is None else float(r["exact_match_ar"]),
    "edit_sim_ar": lambda r: r.get("edit_sim_ar"),
}
#: The record fields the block reads (what ranks send each other).
SENT = ("error", "new_tokens", "total_s", "tau", "tau_excl", "speculative_decoding_stats", "ar_new_tokens",
        "speedup_decode", "speedup_e2e", "token_rate_speedup", "exact_match_ar", "edit_sim_ar")


def run_block(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The keyword arguments of lmms-eval's `log_metrics` for `records` (one process's or the gathered run's)."""
    ok = successful(records)
    tokens = sum(r["new_tokens"] for r in ok)
    elapsed = float(sum(r["total_s"] for r in ok))
    extra: dict[str, Any] = {"total_requests": len(ok)}  # lmms-eval: avg_latency = elapsed / requests; no row
    for key, get in RUN_MEANS.items():
        value = mean([float(v) for v in map(get, ok) if v is not None])
        if value is not None:
            extra[key] = value
    return {"total_elapsed_time": elapsed, "total_gen_tokens": tokens,
            "avg_speed": tokens / elapsed if elapsed else 0.0, "additional_metrics": extra}


def gather(records: list[dict[str, Any]], world_size: int) -> Optional[list[dict[str, Any]]]:
    """Every rank's records (the fields of SENT) on every rank; None when the ranks cannot be reached.

    Every rank calls this once per generate_until (lmms-eval pads the ranks' requests to one count,
    so each rank calls generate_until the same number of times)."""
    slim = [{k: r[k] for k in SENT if k in r} for r in records]
    if world_size <= 1:
        return slim
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, slim)
    return [r for part in parts for r in part]


def log_run(records: list[dict[str, Any]], world_size: int) -> None:
    """Pass the run's block to lmms-eval (results.json `throughput`), gathered over the ranks."""
    from loguru import logger
    from lmms_eval.models.model_utils.gen_metrics import log_metrics

    everything = gather(records, world_size)
    if everything is None:
        logger.warning(f"lvspec: {world_size} processes but no torch.distributed group to gather records over: "
                       "results.json's throughput block covers this rank's samples only; lvspec-report reads "
                       "every rank's record file")
        everything = gather(records, 1)
    log_metrics(**run_block(everything))
