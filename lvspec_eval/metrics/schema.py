"""The per-sample record, defined once: every field with its JSON kind and a one-line meaning.

The writer (`lvspec_eval.metrics.records`), the report's reader (`lvspec_eval.report.record_files`),
the resume key, the sweep and the documentation's field table (docs/records.md) come from here;
tests check the writer's keys against it and the docs against `python -m lvspec_eval.metrics.schema
--check docs/records.md` (`--write docs/records.md` regenerates the tables).

A record is one JSON object per sample (JSON Lines, `lvspec_eval.metrics.jsonl`). Its fields fall
in groups: EVERY record carries the first group, a successful one DECODE, a successful non-`ar`
one decoded with `paired_baseline=true` PAIRED as well, a failed one FAILED instead of DECODE.
`speculative_decoding_stats` nests vLLM's per-request statistics under vLLM's own names
(VLLM_STATS). Codes inside fields (provenance, anchor flags, stop reasons) and run-level
statistic names: `lvspec_eval.glossary`. No imports beyond the standard library.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lvspec_eval import glossary

RECORD_VERSION = 1
SUPPORTED_RECORD_VERSIONS = (1,)

KINDS = ("int", "number", "bool", "string", "object", "list[int]", "list[string]", "int|string")


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # one of KINDS (JSON)
    meaning: str  # one line
    required: bool = False  # the report refuses a record of this field's group without it
    nullable: bool = False  # null is a valid value
    timing: bool = False  # a wall-clock measurement: differs between otherwise identical runs
    resume: bool = False  # part of the resume key (what must match for a record to stand for a request)


@dataclass(frozen=True)
class Group:
    name: str
    when: str  # which records carry the group
    fields: tuple[Field, ...]


EVERY = Group("every", "every record, failed samples included", (
    Field("record_version", "int", "schema version of the record (1)", required=True, resume=True),
    Field("lvspec_eval_version", "string", "version of lvspec-eval that wrote the record"),
    Field("task", "string", "lmms-eval task name", required=True, resume=True),
    Field("split", "string", "the task's split the sample comes from", required=True, resume=True),
    Field("doc_id", "int|string", "lmms-eval doc_id of the sample within the split", required=True, resume=True),
    Field("method", "string", "decoding method: ar, sd, specvlm, lvspec, fly, fly_plus or random", required=True,
          resume=True),
    Field("family", "string", "model family of the backend (qwen2_5_vl, llava_onevision, qwen3_vl)", resume=True),
    Field("target", "string", "target checkpoint (model arg pretrained)", required=True, resume=True),
    Field("draft", "string", "drafter checkpoint (draft_pretrained; `self` for Self-SD); null for ar",
          required=True, nullable=True, resume=True),
    Field("params", "object", "every setting of the method's rule (LVSpecArgs.rule_params())", required=True,
          resume=True),
    Field("dtype", "string", "precision the models were loaded in: the dtype model arg, else the family's built-in "
          "default (`auto`: the checkpoint's own)", required=True, resume=True),
    Field("device", "string", "device of the target's inputs"),
    Field("device_name", "string", "accelerator name (CUDA device name, else the CPU's)"),
    Field("rank", "int", "process rank under data parallel (0 otherwise)"),
    Field("world_size", "int", "number of data-parallel processes of the run"),
    Field("paired_baseline", "bool", "ar was also decoded on this sample in the same process (the ar_* fields)",
          resume=True),
    Field("max_new_tokens", "int", "token limit of the request (as the task asked when its generation kwargs were "
          "refused; null if not an integer)", nullable=True, resume=True),
    Field("until", "list[string]", "stop strings honoured (after until_policy: [] when the family ignores or drops "
          "them; as the task gave them when its generation kwargs were refused)", resume=True),
    Field("video", "object", "video settings: max_num_frames, fps, min_pixels, max_pixels", resume=True),
))

DECODE = Group("decode", "successful samples (no `error`)", (
    Field("new_tokens", "int", "generated tokens (EOS included when hit; before `until` cutting)", required=True),
    Field("rounds", "int", "target verification forwards after prefill (ar: one per token after the first)",
          required=True),
    Field("tau", "number", "(new_tokens - 1) / rounds: tokens emitted per verification forward, correction or bonus "
                           "included (ar: 1.0; the first token comes from prefill); null when rounds = 0",
          required=True, nullable=True),
    Field("tau_excl", "number", "accepted draft tokens / rounds (the SpecVLM/LVSpec convention; tau - 1 unless EOS, "
                                "`until` or the token limit trimmed a round); null when rounds = 0",
          required=True, nullable=True),
    Field("proposed", "int", "draft tokens proposed", required=True),
    Field("accepted_exact", "int", "draft tokens accepted exactly (provenance E)", required=True),
    Field("accepted_loose", "int", "draft tokens accepted loosely (provenance L)", required=True),
    Field("accepted_shift", "int", "draft tokens salvaged by position shift (provenance S)", required=True),
    Field("acceptance_rate", "number", "(accepted_exact + accepted_loose + accepted_shift) / proposed; null when "
                                       "nothing was proposed", nullable=True),
    Field("accepted_per_position", "list[int]", "K counts: how often the draft token at position i (1..K) was "
                                                "accepted", required=True),
    Field("num_draft_tokens", "int", "K, draft tokens per round (0 for ar)"),
    Field("prefill_s", "number", "wall seconds, device-synchronised, of the prefill of target (and drafter)",
          required=True, timing=True),
    Field("decode_s", "number", "wall seconds, device-synchronised, of the decoding loop after prefill",
          required=True, timing=True),
    Field("total_s", "number", "prefill_s + decode_s", required=True, timing=True),
    Field("stop_reason", "string", "why decoding stopped: eos, until or max_new_tokens"),
    Field("tokens", "list[int]", "generated token ids", required=True),
    Field("text", "string", "the answer returned to lmms-eval (special tokens skipped, cut at `until`)",
          required=True),
    Field("token_texts", "list[string]", "the text each token adds (incremental decode, special tokens spelled "
                                         "out; joined = the decode before `until` cutting; '' for a token ending "
                                         "inside a multi-byte character)"),
    Field("provenance", "string", "one glossary code per token: P prefill, T target step, E exact, L loose, "
                                  "S shift, C correction, B bonus"),
    Field("anchor_flags", "string", "one flag per token: a anchor, f filler, - not judged"),
    Field("prompt_tokens", "int", "prompt length in tokens, video tokens included"),
    Field("video_tokens", "int", "video tokens in the target's prompt; null without video", nullable=True),
    Field("draft_video_tokens", "int", "video tokens the drafter prefilled on (< video_tokens when pruned); null for "
                                       "ar, without video, or when the drafter never started (draft_schedule=auto "
                                       "on a short answer)", nullable=True),
    Field("speculative_decoding_stats", "object", "vLLM's per-request speculative-decoding statistics under vLLM's "
                                                  "names (table below); null for ar", nullable=True),
))

PAIRED = Group("paired", "successful non-ar samples decoded with paired_baseline=true", (
    Field("ar_text", "string", "the ar answer of the same sample", required=True),
    Field("ar_tokens", "list[int]", "the ar token ids", required=True),
    Field("ar_token_texts", "list[string]", "token_texts of ar_tokens"),
    Field("ar_new_tokens", "int", "len(ar_tokens)", required=True),
    Field("ar_prefill_s", "number", "prefill_s of the ar decode", timing=True),
    Field("ar_decode_s", "number", "decode_s of the ar decode", required=True, timing=True),
    Field("ar_total_s", "number", "total_s of the ar decode", required=True, timing=True),
    Field("speedup_decode", "number", "ar_decode_s / decode_s (paper convention: prefill excluded)", nullable=True,
          timing=True),
    Field("speedup_e2e", "number", "ar_total_s / total_s", nullable=True, timing=True),
    Field("token_rate_speedup", "number", "((new_tokens - 1) / decode_s) / ((ar_new_tokens - 1) / ar_decode_s): "
                                          "decode-loop tokens per second against ar's", nullable=True, timing=True),
    Field("exact_match_ar", "bool", "tokens and text identical to the ar decode", required=True),
    Field("edit_sim_ar", "number", "token-level normalised Levenshtein similarity to ar_tokens (1.0 = identical)",
          required=True),
))

FAILED = Group("failed", "failed samples, instead of the decode fields", (
    Field("error", "string", "the exception, e.g. `ValueError: cannot read video ...`"),
))

GROUPS = (EVERY, DECODE, PAIRED, FAILED)
FIELDS: dict[str, Field] = {f.name: f for g in GROUPS for f in g.fields}


@dataclass(frozen=True)
class VLLMField:
    name: str
    kind: str
    meaning: str  # vLLM's definition
    ours: str  # the same quantity in our record's own fields


#: Keys of `speculative_decoding_stats`: vLLM's per-request statistics (`--per-request-spec-decode-stats
#: summary|detailed`), as documented in vllm-project/vllm docs/features/speculative_decoding/acceptance_metrics.md
#: (commit cd199986): the object name, the sparse histogram and the per-step arrays of that version.
VLLM_STATS = (
    VLLMField("mean_acceptance_length", "number", "tokens per verification step, bonus included: 1 + "
              "num_accepted_draft_tokens / num_spec_steps; null without spec steps",
              "1 + accepted / (rounds that drafted); = tau unless EOS, `until` or the token limit trimmed a round"),
    VLLMField("draft_acceptance_rate", "number", "num_accepted_draft_tokens / num_draft_tokens; null when nothing "
              "was drafted", "acceptance_rate"),
    VLLMField("acceptance_histogram", "object", "sparse map: accepted draft count j (a string key) -> steps that "
              "accepted exactly j; zero counts omitted; excludes the bonus token", "from per_step_accepted"),
    VLLMField("num_spec_steps", "int", "verification steps that drafted at least one token",
              "rounds minus the rounds that drafted nothing (provenance T)"),
    VLLMField("num_draft_tokens", "int", "draft tokens proposed in all steps",
              "proposed (our top-level num_draft_tokens is K)"),
    VLLMField("num_accepted_draft_tokens", "int", "accepted draft tokens, bonus excluded",
              "accepted_exact + accepted_loose + accepted_shift"),
    VLLMField("num_spec_tokens", "int", "configured draft length K", "num_draft_tokens"),
    VLLMField("per_step_accepted", "list[int]", "accepted draft tokens of each spec step, in order",
              "DecodeResult.per_step_accepted without the rounds that drafted nothing"),
    VLLMField("per_step_drafted", "list[int]", "proposed draft tokens of each spec step, in order (< K when the "
              "drafter proposed EOS or the token limit was near)", "DecodeResult.per_step_drafted, likewise"),
)


# -- what a record must hold ----------------------------------------------------------------------

def groups_of(record: dict[str, Any]) -> tuple[Group, ...]:
    """The groups `record` must carry: EVERY, then FAILED or DECODE (+ PAIRED)."""
    if record.get("error"):
        return EVERY, FAILED
    if record.get("paired_baseline") and record.get("method") != "ar":
        return EVERY, DECODE, PAIRED
    return EVERY, DECODE


def required(record: dict[str, Any]) -> tuple[str, ...]:
    return tuple(f.name for g in groups_of(record) for f in g.fields if f.required and f.name != "error")


def written(record: dict[str, Any]) -> tuple[str, ...]:
    """Every field the writer puts into a record like `record` (all fields of its groups)."""
    return tuple(f.name for g in groups_of(record) for f in g.fields)


def resume_keys() -> tuple[str, ...]:
    return tuple(f.name for f in FIELDS.values() if f.resume)


def timing_fields() -> tuple[str, ...]:
    return tuple(f.name for f in FIELDS.values() if f.timing)


def kind_ok(kind: str, value: Any) -> bool:
    """Does `value` (parsed JSON) have the JSON kind `kind`?"""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "list[int]":
        return isinstance(value, list) and all(kind_ok("int", v) for v in value)
    if kind == "list[string]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "int|string":
        return kind_ok("int", value) or isinstance(value, str)
    raise ValueError(f"unknown kind {kind!r}")


def wrong_kinds(record: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(field, value, expected kind) of every known field of `record` whose value has the wrong kind."""
    out = []
    for name, value in record.items():
        f = FIELDS.get(name)
        if f is None or (value is None and f.nullable) or kind_ok(f.kind, value):
            continue
        out.append((name, value, f.kind))
    return out


# -- documentation --------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _flags(f: Field) -> str:
    parts = [f.kind + (" or null" if f.nullable else "")]
    parts += [p for p, on in (("required", f.required), ("timing", f.timing), ("resume key", f.resume)) if on]
    return ", ".join(parts)


def markdown_fields() -> str:
    """The record field table of docs/records.md."""
    lines = ["| field | kind | meaning |", "|---|---|---|"]
    for g in GROUPS:
        lines.append(f"| **{g.name}**: {_cell(g.when)} | | |")
        lines += [f"| `{f.name}` | {_cell(_flags(f))} | {_cell(f.meaning)} |" for f in g.fields]
    return "\n".join(lines)


def markdown_vllm() -> str:
    lines = ["| `speculative_decoding_stats` key (vLLM) | kind | vLLM's definition | our field |", "|---|---|---|---|"]
    lines += [f"| `{f.name}` | {f.kind} | {_cell(f.meaning)} | {_cell(f.ours)} |" for f in VLLM_STATS]
    return "\n".join(lines)


def markdown_metrics() -> str:
    lines = ["| run-level name | definition |", "|---|---|"]
    lines += [f"| `{name}` | {_cell(meaning)} |" for name, meaning in glossary.METRICS.items()]
    return "\n".join(lines)


def markdown_codes() -> str:
    lines = ["| field | code | name | meaning |", "|---|---|---|---|"]
    lines += [f"| `provenance` | `{c}` | {v.name} | {_cell(v.meaning)} |" for c, v in glossary.PROVENANCE.items()]
    lines += [f"| `anchor_flags` | `{c}` | {v.name} | {_cell(v.meaning)} |" for c, v in glossary.ANCHOR_FLAGS.items()]
    lines += [f"| `stop_reason` | `{c}` | | {_cell(m)} |" for c, m in glossary.STOP_REASONS.items()]
    return "\n".join(lines)


TABLES = {"fields": markdown_fields, "vllm": markdown_vllm, "metrics": markdown_metrics, "codes": markdown_codes}
_BLOCK = re.compile(r"(<!-- BEGIN generated: (\w+) -->\n)(?:.*?\n)?(<!-- END generated: \2 -->)", re.S)


def render_doc(text: str) -> str:
    """`text` with every generated block (`<!-- BEGIN generated: NAME -->` ... END) filled from TABLES."""
    def fill(m: re.Match) -> str:
        if m.group(2) not in TABLES:
            raise ValueError(f"unknown generated block {m.group(2)!r}; known: {', '.join(TABLES)}")
        return m.group(1) + TABLES[m.group(2)]() + "\n" + m.group(3)

    return _BLOCK.sub(fill, text)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lvspec_eval.metrics.schema", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--markdown", nargs="?", const="fields", choices=tuple(TABLES), help="print one table")
    mode.add_argument("--write", metavar="DOC", help="regenerate the generated tables of DOC in place")
    mode.add_argument("--check", metavar="DOC", help="exit 1 when DOC's generated tables differ from the schema")
    a = p.parse_args(argv)
    if a.markdown:
        print(TABLES[a.markdown]())
        return 0
    path = Path(a.write or a.check)
    text = path.read_text(encoding="utf-8")
    fresh = render_doc(text)
    if a.write:
        path.write_text(fresh, encoding="utf-8")
        return 0
    if fresh != text:
        print(f"{path}: generated tables differ from lvspec_eval.metrics.schema; run "
              f"python -m lvspec_eval.metrics.schema --write {path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
