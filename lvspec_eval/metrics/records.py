"""Per-sample records: one JSON line per sample, appended whole, never a partial line.

No torch import here: `lvspec-report` reads records through this module too.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from lvspec_eval.detokenize import IncrementalText

try:  # POSIX advisory lock: several processes may append to one file
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

RECORD_VERSION = 1


def append_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record as a single line with one write(2) under an exclusive lock, then fsync.

    A reader never sees half a line from a live writer, and a writer killed mid-way leaves
    the file as it was before the call or with the whole line."""
    line = (json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(line)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records of a file; a trailing line without newline (a killed writer) is ignored."""
    out = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                break
            if raw.strip():
                try:
                    out.append(json.loads(raw))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON record ({exc})") from None
    return out


def repair_tail(path: str | os.PathLike) -> int:
    """Cut a trailing partial line (left by a writer killed mid-write) so that appends stay valid.

    Returns the number of bytes dropped (0 when the file is missing or ends with a newline)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        keep, pos = size, size
        while pos > 0:  # scan back for the last newline
            start = max(0, pos - 65536)
            chunk = os.pread(fd, pos - start, start)
            if keep == size and chunk.endswith(b"\n"):
                return 0
            nl = chunk.rfind(b"\n")
            if nl != -1:
                keep = start + nl + 1
                break
            keep, pos = 0, start
        os.ftruncate(fd, keep)
        os.fsync(fd)
        return size - keep
    finally:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


#: What must match for a recorded sample to stand for a new request (resume): the sample, the
#: method and its settings, the checkpoints, the precision, the decode limits and the video input.
#: Not: timings, device, rank/world size (a run may resume with another number of processes).
RESUME_KEYS = ("record_version", "task", "split", "doc_id", "method", "family", "target", "draft", "params",
               "dtype", "paired_baseline", "max_new_tokens", "until", "video")


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


def decode_fields(res: Any, num_draft_tokens: int) -> dict[str, Any]:
    """Record fields of one DecodeResult (see the README's field glossary)."""
    new_tokens = len(res.tokens)
    return {
        "new_tokens": new_tokens,
        "rounds": res.rounds,
        # tokens emitted per target verification forward (correction/bonus included); ar: 1.0
        "tau": _ratio(new_tokens - 1, res.rounds),
        # accepted draft tokens per round (SpecVLM/LVSpec convention, tau - 1 without EOS/limit trims)
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
    }


def paired_fields(res: Any, ar: Any, text: str, ar_text: str) -> dict[str, Any]:
    """Fields that compare a method's decode with the `ar` decode of the same sample."""
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
        "exact_match_ar": list(res.tokens) == list(ar.tokens) and text == ar_text,
        "edit_sim_ar": edit_similarity(res.tokens, ar.tokens),
    }


#: Record keys averaged into lmms-eval's results.json (`throughput.avg_<key>`).
RUN_MEAN_KEYS = ("tau", "tau_excl", "acceptance_rate", "speedup_decode", "speedup_e2e", "edit_sim_ar", "exact_match_ar")


def run_means(records: list[dict[str, Any]]) -> dict[str, float]:
    """Means over successful records of the keys in RUN_MEAN_KEYS (keys with no value are left out)."""
    ok = [r for r in records if not r.get("error")]
    out: dict[str, float] = {"samples": float(len(records)), "failed": float(len(records) - len(ok))}
    for key in RUN_MEAN_KEYS:
        values = [float(r[key]) for r in ok if r.get(key) is not None]
        if values:
            out[key] = statistics.fmean(values)
    return out
