"""The writer of per-sample records: the fields of one decode, of its paired `ar` decode, of the
request, and whole-line appends. Every field is defined in `lvspec_eval.metrics.schema`.

No torch import here: `lvspec-report` reads records through this module too.
"""

from __future__ import annotations

import collections
import json
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

from lvspec_eval import __version__
from lvspec_eval.metrics import jsonl, schema
from lvspec_eval.metrics.schema import RECORD_VERSION
from lvspec_eval.detokenize import IncrementalText

if TYPE_CHECKING:  # pragma: no cover
    from lvspec_eval.config import DecodeConfig, LVSpecArgs

__all__ = ["RECORD_VERSION", "RESUME_KEYS", "append_record", "base_record", "decode_fields", "edit_similarity",
           "paired_fields", "read_records", "recorded_samples", "repair_tail", "resume_key",
           "speculative_decoding_stats", "token_pieces", "token_rate_speedup"]

repair_tail = jsonl.repair_tail


def append_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record as a single line (jsonl.append_line: one write under the file's lock, fsync)."""
    jsonl.append_line(path, record)


def read_records(path: str | os.PathLike, warn: Optional[Callable[[str], None]] = None) -> list[dict[str, Any]]:
    """All records of a file under the JSONL reader policy (a truncated last line: warned, skipped)."""
    return [value for _, value in jsonl.read_lines(path, warn)]


#: What must match for a recorded sample to stand for a new request (resume): the sample, the
#: method and its settings, the checkpoints, the precision, the decode limits and the video input.
#: Not: timings, device, rank/world size (a run may resume with another number of processes).
RESUME_KEYS = schema.resume_keys()


def resume_key(record: dict[str, Any]) -> str:
    return json.dumps([record.get(k) for k in RESUME_KEYS], sort_keys=True, separators=(",", ":"))


def recorded_samples(paths: Iterable[str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """Successful records of `paths` by resume_key (failed samples are not done: they are retried)."""
    return {resume_key(r): r for path in paths for r in read_records(path) if not r.get("error")}


def edit_similarity(a: Iterable[int], b: Iterable[int]) -> float:
    """Token-level normalised Levenshtein similarity in [0, 1] (1.0: identical)."""
    from rapidfuzz.distance import Levenshtein

    return float(Levenshtein.normalized_similarity(list(a), list(b)))


def token_pieces(decode: Callable[[list[int]], str], ids: list[int]) -> list[str]:
    """The text each token adds, one string per id; their concatenation is decode(ids).

    Incremental decoding (`lvspec_eval.detokenize.IncrementalText`): a token that ends in the
    middle of a multi-byte character gets '' and its bytes appear with the token that completes
    the character; an incomplete character at the very end goes to the last token."""
    stream = IncrementalText(decode)
    pieces = [stream.push(i) for i in ids]
    if pieces:
        pieces[-1] += stream.flush()
    return pieces


def _ratio(num: float, den: float) -> Optional[float]:
    return num / den if den else None


def base_record(args: "LVSpecArgs", cfg: Optional["DecodeConfig"], *, dtype: str, task: str, split: str,
                doc_id: Any, family: str, device: str, device_name: str, rank: int, world_size: int,
                asked: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The fields of every record (schema.EVERY): the sample, the method and where it ran. `dtype`: the
    precision the models were loaded in (the family's default when the args give none). Without `cfg`
    (the request's generation kwargs were refused) the limits are recorded as `asked`."""
    if cfg is not None:
        max_new_tokens, until = cfg.max_new_tokens, list(cfg.until)
    else:
        asked = asked or {}
        max_new_tokens, until = asked.get("max_new_tokens"), asked.get("until", [])
        max_new_tokens = max_new_tokens if isinstance(max_new_tokens, int) and not isinstance(max_new_tokens, bool) else None
        until = [until] if isinstance(until, str) else (
            [str(u) for u in until] if isinstance(until, list) else [repr(until)])  # as asked, spelled as strings
    return {
        "record_version": RECORD_VERSION,
        "lvspec_eval_version": __version__,
        "task": task, "split": split, "doc_id": doc_id,
        "method": args.method,
        "family": family,
        "target": args.pretrained,
        "draft": None if args.method == "ar" else args.draft_pretrained,
        "params": args.rule_params(),
        "dtype": dtype,
        "device": device,
        "device_name": device_name,
        "rank": rank,
        "world_size": world_size,
        "paired_baseline": args.paired_baseline,
        "max_new_tokens": max_new_tokens,
        "until": until,
        "video": {"max_num_frames": args.max_num_frames, "fps": args.fps, "min_pixels": args.min_pixels,
                  "max_pixels": args.max_pixels},
    }


def speculative_decoding_stats(per_step_accepted: list[int], per_step_drafted: list[int],
                               num_spec_tokens: int) -> Optional[dict[str, Any]]:
    """vLLM's per-request statistics under vLLM's names (schema.VLLM_STATS) from the per-round counts of
    a decode; rounds that drafted nothing are not spec steps. None for `ar` (num_spec_tokens 0)."""
    if num_spec_tokens == 0:
        return None
    steps = [(a, d) for a, d in zip(per_step_accepted, per_step_drafted, strict=True) if d > 0]
    accepted = sum(a for a, _ in steps)
    drafted = sum(d for _, d in steps)
    histogram = collections.Counter(a for a, _ in steps)
    return {
        "mean_acceptance_length": 1 + accepted / len(steps) if steps else None,
        "draft_acceptance_rate": _ratio(accepted, drafted),
        "acceptance_histogram": {str(j): histogram[j] for j in sorted(histogram)},
        "num_spec_steps": len(steps),
        "num_draft_tokens": drafted,
        "num_accepted_draft_tokens": accepted,
        "num_spec_tokens": num_spec_tokens,
        "per_step_accepted": [a for a, _ in steps],
        "per_step_drafted": [d for _, d in steps],
    }


def decode_fields(res: Any, num_draft_tokens: int) -> dict[str, Any]:
    """Record fields of one DecodeResult (schema.DECODE, less text, token_texts and prompt_tokens,
    which the backend adds)."""
    new_tokens = len(res.tokens)
    return {
        "new_tokens": new_tokens,
        "rounds": res.rounds,
        "tau": _ratio(new_tokens - 1, res.rounds),
        "tau_excl": _ratio(res.accepted, res.rounds),
        "proposed": res.proposed,
        "accepted_exact": res.accepted_exact,
        "accepted_loose": res.accepted_loose,
        "accepted_shift": res.accepted_shift,
        "acceptance_rate": _ratio(res.accepted, res.proposed),
        "accepted_per_position": list(res.accepted_per_position),
        "num_draft_tokens": num_draft_tokens,
        "prefill_s": res.prefill_s,
        "decode_s": res.decode_s,
        "total_s": res.prefill_s + res.decode_s,
        "stop_reason": res.stop_reason,
        "tokens": list(res.tokens),
        "provenance": res.provenance,
        "anchor_flags": res.anchor_flags,
        "video_tokens": res.video_tokens,
        "draft_video_tokens": res.draft_video_tokens,
        "speculative_decoding_stats": speculative_decoding_stats(res.per_step_accepted, res.per_step_drafted,
                                                                 num_draft_tokens),
    }


def token_rate_speedup(new_tokens: int, decode_s: float, ar_new_tokens: int, ar_decode_s: float) -> Optional[float]:
    """((new_tokens - 1) / decode_s) / ((ar_new_tokens - 1) / ar_decode_s): decode-loop tokens per second
    against ar's (the first token of each comes from prefill); None where a rate is undefined."""
    rate, ar_rate = _ratio(new_tokens - 1, decode_s), _ratio(ar_new_tokens - 1, ar_decode_s)
    return None if rate is None or not ar_rate else rate / ar_rate


def paired_fields(res: Any, ar: Any, text: str, ar_text: str) -> dict[str, Any]:
    """Fields that compare a method's decode with the `ar` decode of the same sample (schema.PAIRED,
    less ar_token_texts, which the backend adds)."""
    total = res.prefill_s + res.decode_s
    ar_total = ar.prefill_s + ar.decode_s
    return {
        "ar_text": ar_text,
        "ar_tokens": list(ar.tokens),
        "ar_new_tokens": len(ar.tokens),
        "ar_prefill_s": ar.prefill_s,
        "ar_decode_s": ar.decode_s,
        "ar_total_s": ar_total,
        "speedup_decode": _ratio(ar.decode_s, res.decode_s),
        "speedup_e2e": _ratio(ar_total, total),
        "token_rate_speedup": token_rate_speedup(len(res.tokens), res.decode_s, len(ar.tokens), ar.decode_s),
        "exact_match_ar": list(res.tokens) == list(ar.tokens) and text == ar_text,
        "edit_sim_ar": edit_similarity(res.tokens, ar.tokens),
    }
