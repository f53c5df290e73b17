"""Settings sweep on the testbed caption task, in one process (models loaded once).

    python -m testbed.sweep [--limit 60] [--out reports/testbed_sweep.json]

For every setting it decodes the same test clips through the code the ``lvspec_qwen`` backend runs
(its pair loading, its input preparation from lmms-eval messages, and the method built from the
setting's model args by ``build_method``; only the lmms-eval request handling around it is skipped)
and reports tau, acceptance, decode speedup over ``ar`` (same process, same clips), exact match with
``ar``, retention of ``anchor_f1`` (every statistic under its one name, from
``lvspec_eval.metrics.aggregate``), and how well LVSpec's anchor
flags find the grammar's true anchor tokens: precision and recall of the 'a' flags among the
judged tokens against the tokens that spell an attribute word.

The grid: ``anchor_rule`` {rank, quantile} x ``relevance_repr`` (the paper's ``embedding``, ``hidden``,
and this project's ``attention``) x lambda {0.5, 0.7, 0.9} x w {0, 1, 2, 3}; ``anchor_rule=target_prob``
(no relevance representation) x lambda {0.5, 0.7, 0.9, 0.99} x w {0, 1, 2, 3}; plus
``sd``, ``fly``, ``fly_plus`` and ``random`` rows for reference.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from lvspec_eval.metrics import aggregate
from lvspec_eval.metrics.records import decode_fields, paired_fields
from testbed import grammar as g

from testbed.paths import REPORTS, TESTBED_TASK_DIR as TASK_DIR, VIDEO_ARGS
MAX_NEW_TOKENS = 96
#: Run-level statistics of each setting (names and definitions: lvspec_eval.glossary.METRICS).
STATISTICS = ("tau_mean", "tau_pooled", "tau_excl_pooled", "acceptance_rate_pooled", "acceptance_loose",
              "acceptance_shift", "speedup_decode_pooled", "token_rate_speedup_pooled", "new_tokens_mean",
              "ar_new_tokens_mean", "exact_match_ar_mean")


def true_anchor_mask(tok: Any, tokens: list[int]) -> list[bool]:
    """Per token: does it spell (part of) an attribute word of the grammar?"""
    from lvspec_eval.metrics.records import token_pieces

    pieces = token_pieces(lambda ids: tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
                          tokens)
    spans, end = [], 0
    for piece in pieces:
        spans.append((end, end + len(piece)))
        end += len(piece)
    words = g.anchor_char_spans("".join(pieces))
    return [any(a < e and s < b for s, e in words) for a, b in spans]


def anchor_counts(tok: Any, tokens: list[int], flags: str) -> tuple[int, int, int]:
    """(true positives, flagged, true anchors) over the judged tokens (flag 'a' or 'f')."""
    truth = true_anchor_mask(tok, tokens)
    tp = flagged = anchors = 0
    for is_anchor, flag in zip(truth, flags):
        if flag not in "af":
            continue
        flagged += flag == "a"
        anchors += is_anchor
        tp += is_anchor and flag == "a"
    return tp, flagged, anchors


def load_pair(target: str, draft: str) -> tuple[Any, Any, Any]:
    """(base model args, target adapter, drafter adapter), loaded and checked as the backend does."""
    from lvspec_eval.adapters.qwen2_5_vl import QwenVLAdapter
    from lvspec_eval.config import LVSpecArgs
    from lvspec_eval.lmms import pair

    args = LVSpecArgs(pretrained=target, draft_pretrained=draft, method="lvspec", dtype="float32", device_map="cpu",
                      **VIDEO_ARGS)
    pair.check_checkpoints(args)
    maps = pair.device_maps(args, device="cpu")
    pair.check_tokenizers(args)
    return (args, *pair.load_pair(args, QwenVLAdapter, *maps, dtype=args.dtype))


def prepare_docs(target: Any, limit: int) -> list[tuple[dict, dict]]:
    from lvspec_eval.lmms.inputs import prepare_inputs

    docs = [json.loads(line) for line in (TASK_DIR / "caption.jsonl").read_text().splitlines()][:limit]
    out = []
    for doc in docs:
        messages = [{"role": "user", "content": [{"type": "video", "url": str(TASK_DIR / "videos" / doc["video"])},
                                                 {"type": "text", "text": doc["question"]}]}]
        out.append((doc, prepare_inputs(target, messages)))
    return out


def run_setting(models: tuple[Any, Any, Any], docs: list[tuple[dict, dict]], ar: list[dict], method: str,
                **params: Any) -> dict:
    from lvspec_eval.config import DecodeConfig
    from lvspec_eval.engine import build_method

    base, target, draft = models
    built = build_method(base.replace(method=method, **params))
    tok = target.tokenizer
    # greedy to MAX_NEW_TOKENS or the tokenizer's EOS, no stop strings (the tasks' answers are one line)
    cfg = DecodeConfig(max_new_tokens=MAX_NEW_TOKENS, eos_ids=tuple(i for i in (tok.eos_token_id,) if i is not None),
                       num_draft_tokens=built.args.num_draft_tokens)
    rows = []
    for (doc, inputs), base_row in zip(docs, ar):
        res = built.decode(target, draft, inputs, cfg, seed=doc["doc_id"])
        text = tok.decode(res.tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        rows.append({"res": res, "text": text, "f1": g.score_caption(text, doc["attributes"])["anchor_f1"],
                     "exact": base_row["res"] is None or res.tokens == base_row["res"].tokens})
    out: dict[str, Any] = {"method": method, **params}
    if method == "ar":
        return {**out, "rows": rows}
    # per-sample records from the writer, paired with the ar decode of the same clip; run-level
    # statistics under their one name (lvspec_eval.glossary.METRICS, lvspec_eval.metrics.aggregate)
    records = [{**decode_fields(r["res"], cfg.num_draft_tokens), "text": r["text"],
                **paired_fields(r["res"], b["res"], r["text"], b["text"])} for r, b in zip(rows, ar)]
    out.update(aggregate.compute(records, STATISTICS))
    ar_f1 = statistics.fmean(b["f1"] for b in ar)
    out.update(
        anchor_f1=statistics.fmean(r["f1"] for r in rows),  # the task score
        retention=statistics.fmean(r["f1"] for r in rows) / ar_f1 if ar_f1 else None,
    )
    if method == "lvspec":
        tp = flagged = anchors = 0
        for r in rows:
            a, b, c = anchor_counts(tok, r["res"].tokens, r["res"].anchor_flags)
            tp, flagged, anchors = tp + a, flagged + b, anchors + c
        out.update(anchor_precision=tp / flagged if flagged else None, anchor_recall=tp / anchors if anchors else None)
    return out


def grid() -> list[tuple[str, dict]]:
    settings: list[tuple[str, dict]] = [("sd", {}), ("fly", {}), ("fly_plus", {}), ("random", {})]
    grid_axes = (("rank", "quantile"), ("embedding", "hidden", "attention"), (0.5, 0.7, 0.9), (0, 1, 2, 3))
    for rule, rep, lam, w in itertools.product(*grid_axes):
        settings.append(("lvspec", dict(anchor_rule=rule, relevance_repr=rep, relax_ratio=lam, shift_window=w)))
    # target_prob reads the target's logits, no relevance representation (the field is left at its default)
    for lam, w in itertools.product((0.5, 0.7, 0.9, 0.99), (0, 1, 2, 3)):
        settings.append(("lvspec", dict(anchor_rule="target_prob", relevance_repr="attention", relax_ratio=lam,
                                        shift_window=w)))
    return settings


def main(argv: list[str] | None = None) -> None:
    import torch

    from testbed.checkpoints import checkpoint

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=60, help="test clips per setting")
    p.add_argument("--out", type=Path, default=REPORTS / "testbed_sweep.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target", default=None, help="target checkpoint (default: the testbed target)")
    p.add_argument("--draft", default=None, help="drafter checkpoint (default: the testbed drafter)")
    p.add_argument("--shard", default="0/1", help="i/n: run every n-th setting from the i-th (parallel processes)")
    p.add_argument("--merge", nargs="+", type=Path, default=None,
                   help="merge the JSON outputs of shards into --out (and its .md), running nothing")
    p.add_argument("--only", default=None, help="comma-separated methods to run (default: the whole grid)")
    p.add_argument("--anchor-rules", default=None, help="comma-separated anchor rules of the lvspec rows to run (other methods' rows are kept)")
    a = p.parse_args(argv)
    if a.merge:
        parts = [json.loads(f.read_text()) for f in a.merge]
        rows = [r for part in parts for r in part["rows"]]
        order = {(m, json.dumps(prm, sort_keys=True)): i for i, (m, prm) in enumerate(grid())}
        rows.sort(key=lambda r: order.get((r["method"], json.dumps(
            {k: r[k] for k in ("anchor_rule", "relevance_repr", "relax_ratio", "shift_window") if k in r},
            sort_keys=True)), 1e9))
        meta = dict(parts[0]["meta"], minutes=max(pt["meta"]["minutes"] for pt in parts),
                    command=(f"{len(parts)} processes, python -m testbed.sweep "
                             f"--limit {parts[0]['meta']['clips']} --threads {parts[0]['meta']['threads']} --shard i/{len(parts)} --out shard_i.json, then "
                             f"--merge shard_*.json --out {a.out}"), processes=len(parts))
        a.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        a.out.with_suffix(".md").write_text(markdown(rows, meta))
        print(f"merged {len(rows)} rows into {a.out}")
        return
    torch.set_num_threads(a.threads)
    models = load_pair(a.target or str(checkpoint("target")), a.draft or str(checkpoint("drafter")))
    docs = prepare_docs(models[1], a.limit)
    t0 = time.time()
    ar = run_setting(models, docs, [{"res": None}] * len(docs), "ar")["rows"]
    for r in ar:
        r["exact"] = True
    results = []
    settings = grid()
    if a.only:
        keep = set(a.only.split(","))
        settings = [s for s in settings if s[0] in keep]
    if a.anchor_rules:
        rules = set(a.anchor_rules.split(","))
        settings = [s for s in settings if s[0] != "lvspec" or s[1]["anchor_rule"] in rules]
    index, count = (int(x) for x in a.shard.split("/"))
    settings = settings[index::count]
    for i, (method, params) in enumerate(settings):
        row = run_setting(models, docs, ar, method, **params)
        results.append(row)
        print(f"[{i + 1}/{len(settings)}] " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                                      for k, v in row.items()), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"clips": a.limit, "max_new_tokens": MAX_NEW_TOKENS, "threads": a.threads,
            "ar_anchor_f1": statistics.fmean(r["f1"] for r in ar), "minutes": round((time.time() - t0) / 60, 1),
            "command": "python -m testbed.sweep " + " ".join(argv or sys.argv[1:])}
    a.out.write_text(json.dumps({"meta": meta, "rows": results}, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(markdown(results, meta))
    print(f"wrote {a.out} and {a.out.with_suffix('.md')}")


COLUMNS = ("method", "anchor_rule", "relevance_repr", "relax_ratio", "shift_window", *STATISTICS, "retention",
           "anchor_precision", "anchor_recall")


def markdown(rows: list[dict], meta: dict) -> str:
    from tabulate import tabulate

    body = [[r.get(c) for c in COLUMNS] for r in rows]
    head = (f"Sweep on {meta['clips']} test clips of lvspec_testbed_caption (ar anchor_f1 {meta['ar_anchor_f1']:.3f}), "
            f"{meta['threads']} threads, {meta['minutes']} min. Command: `{meta['command']}`\n\n")
    return head + tabulate(body, headers=list(COLUMNS), tablefmt="github", floatfmt=".3f",
                           missingval="") + "\n"


if __name__ == "__main__":
    sys.exit(main())
