"""The one glossary: decoding terms, the codes a record carries, and the name of every run-level
statistic. Engine, rules, records, report, HTML legend and docs refer here instead of repeating.

No imports beyond the standard library: the report (no torch) and the docs generator read it.

Terms
-----
A *round* drafts K tokens d_1..d_K and verifies them with ONE target forward over
[last, d_1..d_K], which yields the target's greedy choices t_1..t_{K+1}; t_i is the target's
token for the position of d_i and t_{K+1} is the *bonus*. Walking i = 1..K, a draft token is

- **exact**      d_i == t_i (what standard speculative decoding accepts);
- **loose**      d_i != t_i but the rule accepts it anyway (output now differs from greedy);
- **shift**      d_i != t_i, d_i is a visual anchor, and d_i == t_j for some 0 < |j - i| <= w
                 (position-shift tolerance salvaged it);
- **rejected**   none of the above: the walk stops and t_i is emitted as the *correction*.

If all K are accepted the bonus t_{K+1} is emitted. Verdicts after the first rejection are
ignored. *Accepted* draft tokens are the exact + loose + shift ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    name: str
    meaning: str


#: Provenance code of each emitted token (record field `provenance`, one character per token).
PROVENANCE: dict[str, Code] = {
    "P": Code("prefill", "first token, the target's choice after prefill"),
    "T": Code("target step", "plain greedy step of the target (ar, or a round that drafted nothing: one token "
                             "remained, or the drafter had not started yet under draft_schedule=auto)"),
    "E": Code("exact", "draft token equal to the target's choice"),
    "L": Code("loose", "draft token accepted by the rule although the target chose another"),
    "S": Code("shift", "draft anchor salvaged by position-shift tolerance"),
    "C": Code("correction", "the target's token after a rejected draft token"),
    "B": Code("bonus", "the target's extra token after a fully accepted block"),
}
#: Codes of accepted draft tokens, and of the one target token that ends a round.
ACCEPTED_CODES = "ELS"
ROUND_END_CODES = "TCB"

#: Anchor flag of each emitted token (record field `anchor_flags`).
ANCHOR_FLAGS: dict[str, Code] = {
    "a": Code("anchor", "judged a visual anchor (with anchor_rule=target_prob: the target gave the draft token "
                        "less than (1-lambda) of its own token's probability)"),
    "f": Code("filler", "judged a filler token (may be accepted loosely)"),
    "-": Code("not judged", "no relevance judgement (not a draft position, or a rule without anchors)"),
}

#: Why decoding stopped (record field `stop_reason`).
STOP_REASONS: dict[str, str] = {
    "eos": "the model emitted an end-of-sequence token",
    "until": "the answer reached one of the request's stop strings",
    "max_new_tokens": "the request's token limit was reached",
}

#: Run-level statistics: one name, one definition, everywhere (summary rows, leaderboard, sweep,
#: benchmarks, docs). Implemented once in `lvspec_eval.metrics.aggregate`. Over the successful
#: samples of a run (records without `error`); `_mean` / `_median` are over per-sample values,
#: `_pooled` is a ratio of sums over samples. Per-sample fields: `lvspec_eval.metrics.schema`.
METRICS: dict[str, str] = {
    "tau_mean": "mean of per-sample tau = (new_tokens - 1) / rounds (samples with rounds = 0 have no tau)",
    "tau_median": "median of per-sample tau",
    "tau_pooled": "sum(new_tokens - 1) / sum(rounds): tokens per verification forward over all rounds of the run",
    "tau_excl_mean": "mean of per-sample tau_excl = accepted draft tokens / rounds",
    "tau_excl_pooled": "sum(accepted) / sum(rounds)",
    "acceptance_rate_pooled": "sum(accepted) / sum(proposed); null when nothing was proposed (ar)",
    "acceptance_exact": "sum(accepted_exact) / sum(proposed)",
    "acceptance_loose": "sum(accepted_loose) / sum(proposed)",
    "acceptance_shift": "sum(accepted_shift) / sum(proposed); exact + loose + shift = acceptance_rate_pooled",
    "speedup_decode_pooled": "sum(ar decode_s) / sum(decode_s) over samples with ar timings (prefill excluded, the "
                             "paper's convention): the wall-clock gain over the set",
    "speedup_decode_median": "median of per-sample speedup_decode = ar_decode_s / decode_s",
    "speedup_e2e_pooled": "sum(ar total_s) / sum(total_s), total_s = prefill_s + decode_s",
    "speedup_e2e_median": "median of per-sample speedup_e2e = ar_total_s / total_s",
    "token_rate_speedup_pooled": "(sum(new_tokens - 1) / sum(decode_s)) / (sum(ar_new_tokens - 1) / sum(ar decode_s)): "
                                 "decode-loop tokens per second against ar's; below speedup_decode_pooled when the "
                                 "method's answers are longer, above when they are shorter",
    "token_rate_speedup_median": "median of per-sample token_rate_speedup",
    "new_tokens_mean": "mean answer length (new_tokens) over the samples with ar timings",
    "ar_new_tokens_mean": "mean ar answer length (ar_new_tokens) over the same samples",
    "exact_match_ar_mean": "share of samples whose tokens and text equal ar's",
    "edit_sim_ar_mean": "mean token-level normalised Levenshtein similarity to ar's tokens",
    "tau_ratio": "sum(tau) / sum(tau of the lossless counterpart) over the docs both decoded (paired by doc: mean tau "
                 "/ mean counterpart tau); the counterpart is the strict rule on the same drafter input (`specvlm` for a "
                 "pruned drafter, else `sd`: config.lossless_counterpart)",
    "score": "lmms-eval task score: mean of the per-sample metric values (or the results file's aggregate)",
    "retention": "sum(score) / sum(ar score) over docs that have both: mean score / mean ar score",
}
