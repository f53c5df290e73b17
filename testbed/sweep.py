"""Settings sweep on the testbed caption task, in one process (models loaded once), on validation clips.

    python -m testbed.sweep [--split val|test] [--limit 60] [--out reports/testbed_sweep.json]
    python -m testbed.sweep --select [--out reports/testbed_sweep.json]   # re-read a sweep, select, run nothing

Tuned on validation, reported on test (docs/testbed.md): by default the sweep decodes the
validation clips (`lvspec_testbed_caption_val`, disjoint from the test clips and from the training's
stop checks) and ends with a *selection*: per family of settings (anchor rule x relevance
representation x drafter input) the setting with the highest `tau_ratio` (tau over its lossless
counterpart's, paired by doc) among those whose retention of anchor_f1 is >= 0.99 (SELECT_RULE),
and whether the registered variant of that family (testbed/variants.py) is that setting. `make
demo` and reports/testbed.md then report the registered variants on the test clips.
`--split test` decodes the test clips instead (for reading only: its selection is marked as such).

For every setting it decodes the same clips through the code the ``lvspec_qwen`` backend runs
(its pair loading, its input preparation from lmms-eval messages, and the method built from the
setting's model args by ``build_method``; only the lmms-eval request handling around it is skipped)
and reports the statistics under their one name (lvspec_eval.glossary.METRICS, computed by
``lvspec_eval.metrics.aggregate``) with bootstrap 95% intervals for tau_ratio, decode speedup (time
and token rate) and retention; decode speedup over ``ar`` of the same process and clips (``ar`` decoded once, first: not
paired in time, see SPEED_CAVEAT); and how
well LVSpec's anchor flags find the grammar's true anchor tokens: precision and recall of the 'a'
flags among the judged tokens against the tokens that spell an attribute word.

The grid: reference rows ``sd``, ``specvlm``, ``fly``, ``fly_plus``, ``random`` and
``lvspec+full_video``; ``lvspec`` (drafter on the SpecVLM-pruned video, the paper's input) over
``anchor_rule`` {rank, quantile} x ``relevance_repr`` (the paper's ``embedding``, ``hidden``, this
project's ``attention``) x lambda (--lambdas) x w (--windows); ``anchor_rule=target_prob`` (no
relevance representation) x (lambdas + 0.99) x w. Every row pairs with its lossless counterpart row
(``specvlm`` or ``sd``, testbed/variants.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

from lvspec_eval.metrics import aggregate
from lvspec_eval.metrics.records import decode_fields, paired_fields
from testbed import grammar as g
from testbed import variants

from testbed.paths import REPORTS, VIDEO_ARGS
MAX_NEW_TOKENS = 96
#: split -> (doc file, lmms-eval task of those docs)
SPLITS = {"val": ("caption_val.jsonl", "lvspec_testbed_caption_val"), "test": ("caption.jsonl", "lvspec_testbed_caption")}
#: Run-level statistics of each setting (names and definitions: lvspec_eval.glossary.METRICS).
STATISTICS = ("tau_mean", "tau_pooled", "tau_excl_pooled", "acceptance_rate_pooled", "acceptance_loose",
              "acceptance_shift", "speedup_decode_pooled", "token_rate_speedup_pooled", "new_tokens_mean",
              "ar_new_tokens_mean", "exact_match_ar_mean")
#: Fields of a grid setting that the table shows as columns.
SETTING_FIELDS = ("anchor_rule", "relevance_repr", "relax_ratio", "shift_window", "draft_video_keep")
SELECT_MIN_RETENTION = 0.99
#: The sweep's speedups are not paired in time: `ar` is decoded once, first, and every setting after it.
SPEED_CAVEAT = ("Speedups here compare each setting with `ar` decoded once at the start of its process, not side by "
                "side: load changes during a sweep move them (identical decodes of two rows can differ); read them as "
                "rough, and the demo's (paired_baseline) for speed. The selection uses tau_ratio and retention only.")
SELECT_RULE = ("highest tau_ratio (tau_mean over the lossless counterpart's, paired by doc) among the lvspec settings "
               "whose retention of anchor_f1 (point estimate) is >= {min:.2f}; ties: higher retention, then lower "
               "lambda")
RESAMPLES = 1000


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


def prepare_docs(target: Any, limit: int, split: str = "val") -> list[tuple[dict, dict]]:
    from testbed.runs import task_docs

    return task_docs(target, SPLITS[split][0], limit)


def run_setting(models: tuple[Any, Any, Any], docs: list[tuple[dict, dict]], ar: list[dict], method: str,
                resamples: int = RESAMPLES, **settings: Any) -> dict:
    from lvspec_eval.config import DecodeConfig
    from lvspec_eval.engine import build_method

    base, target, draft = models
    built = build_method(base.replace(method=method, **settings))
    tok = target.tokenizer
    # greedy to MAX_NEW_TOKENS or the tokenizer's EOS, no stop strings (the tasks' answers are one line)
    cfg = DecodeConfig(max_new_tokens=MAX_NEW_TOKENS, eos_ids=tuple(i for i in (tok.eos_token_id,) if i is not None),
                       num_draft_tokens=built.args.num_draft_tokens)
    rows = []
    for doc, inputs in docs:
        res = built.decode(target, draft, inputs, cfg, seed=doc["doc_id"])
        text = tok.decode(res.tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        rows.append({"res": res, "text": text, "f1": g.score_caption(text, doc["attributes"])["anchor_f1"],
                     "doc_id": doc["doc_id"]})
    params = built.args.rule_params()
    out: dict[str, Any] = {"method": method, **settings, "variant": variants.find(method, params), "params": params}
    if method == "ar":
        return {**out, "rows": rows}
    # per-sample records from the writer, paired with the ar decode of the same clip; run-level
    # statistics under their one name (lvspec_eval.glossary.METRICS, lvspec_eval.metrics.aggregate)
    records = [{**decode_fields(r["res"], cfg.num_draft_tokens), "text": r["text"], "doc_id": r["doc_id"],
                **paired_fields(r["res"], b["res"], r["text"], b["text"])} for r, b in zip(rows, ar)]
    out.update(aggregate.compute(records, STATISTICS))
    out.update(speedup_decode_pooled_ci=aggregate.speedup_pooled_ci(records, "decode", resamples, 0),
               token_rate_speedup_pooled_ci=aggregate.token_rate_speedup_pooled_ci(records, resamples, 0))
    mine, theirs = [r["f1"] for r in rows], [b["f1"] for b in ar]
    out.update(
        anchor_f1=statistics.fmean(mine),  # the task score
        retention=aggregate.ratio(sum(mine), sum(theirs)),  # glossary.METRICS["retention"]
        retention_ci=aggregate.bootstrap_ratio(mine, theirs, resamples, 0),
        # per doc, for tau_ratio against the counterpart row (also across shards: tau is deterministic)
        doc_ids=[r["doc_id"] for r in records], taus=[r["tau"] for r in records],
    )
    if method == "lvspec":
        tp = flagged = anchors = 0
        for r in rows:
            a, b, c = anchor_counts(tok, r["res"].tokens, r["res"].anchor_flags)
            tp, flagged, anchors = tp + a, flagged + b, anchors + c
        out.update(anchor_precision=tp / flagged if flagged else None, anchor_recall=tp / anchors if anchors else None)
    return out


def reference_settings() -> list[tuple[str, dict]]:
    """The rows every process decodes: the lossless counterparts and the other methods, at their defaults."""
    return [("sd", {}), ("specvlm", {}), ("fly", {}), ("fly_plus", {}), ("random", {}),
            ("lvspec", {"draft_video_keep": 1.0})]


def grid(lambdas: tuple[float, ...] = (0.5, 0.7, 0.9), windows: tuple[int, ...] = (0, 2)) -> list[tuple[str, dict]]:
    settings = reference_settings()
    for rule, rep, lam, w in itertools.product(("rank", "quantile"), ("embedding", "hidden", "attention"), lambdas,
                                               windows):
        settings.append(("lvspec", dict(anchor_rule=rule, relevance_repr=rep, relax_ratio=lam, shift_window=w)))
    # target_prob reads the target's logits, no relevance representation (the field is left at its default)
    for lam, w in itertools.product(sorted({*lambdas, 0.99}), windows):
        settings.append(("lvspec", dict(anchor_rule="target_prob", relax_ratio=lam, shift_window=w)))
    return settings


def row_key(method: str, params: dict) -> str:
    return method + json.dumps(params, sort_keys=True)


def compare(rows: list[dict], resamples: int = RESAMPLES) -> None:
    """Give each loose row its lossless counterpart row (same drafter input) and tau_ratio against it."""
    from lvspec_eval.config import lossless_counterpart

    by_key = {row_key(r["method"], r["params"]): r for r in rows}
    for row in rows:
        found = lossless_counterpart(row["method"], row["params"], "drafter")
        if found is None:
            continue
        other = by_key.get(row_key(*found))
        row["counterpart"] = variants.find(*found) or found[0]
        if other is None:
            row.update(tau_ratio=None, tau_ratio_ci=None)
            continue
        recs = [{"doc_id": d, "tau": t} for d, t in zip(row["doc_ids"], row["taus"])]
        theirs = [{"doc_id": d, "tau": t} for d, t in zip(other["doc_ids"], other["taus"])]
        value, ci, _ = aggregate.tau_ratio(recs, theirs, resamples, 0)
        row.update(tau_ratio=value, tau_ratio_ci=ci)


def family(row: dict) -> str:
    """The family of an lvspec setting: anchor rule, relevance representation (none for target_prob), drafter input."""
    p = row["params"]
    rep = "-" if p["anchor_rule"] == "target_prob" else p["relevance_repr"]
    video = "pruned" if "draft_video_keep" in p else "full video"
    return f"{p['anchor_rule']} / {rep} / {video}"


def setting_text(row: dict, named: bool = True) -> str:
    p = row["params"]
    return f"λ {p['relax_ratio']}, w {p['shift_window']}" + (f" ({row['variant']})" if named and row.get("variant")
                                                             else "")


def select(rows: list[dict], split: str, min_retention: float = SELECT_MIN_RETENTION) -> dict:
    """The winner of SELECT_RULE overall and per family, and for each registered lvspec variant whether its
    setting is its family's winner."""
    def rank(r: dict) -> tuple:
        return (r["tau_ratio"], r["retention"], -r["params"]["relax_ratio"])

    lv = [r for r in rows if r["method"] == "lvspec" and r.get("tau_ratio") is not None and r["retention"] is not None]
    ok = [r for r in lv if r["retention"] >= min_retention]
    families: dict[str, list[dict]] = {}
    for r in lv:
        families.setdefault(family(r), []).append(r)
    pick = {name: max((r for r in members if r["retention"] >= min_retention), key=rank, default=None)
            for name, members in families.items()}

    def brief(r: Optional[dict]) -> Optional[dict]:
        if r is None:
            return None
        return {"family": family(r), "setting": setting_text(r), "values": setting_text(r, named=False),
                "params": r["params"], "variant": r.get("variant"),
                **{k: r.get(k) for k in ("tau_mean", "tau_ratio", "tau_ratio_ci", "retention", "retention_ci",
                                         "speedup_decode_pooled", "counterpart")}}

    registry = []
    for r in lv:
        if r.get("variant"):
            winner = pick[family(r)]
            is_winner = winner is not None and winner["params"] == r["params"]
            registry.append({"variant": r["variant"], "family": family(r), "registered": brief(r),
                             "family_winner": brief(winner), "is_winner": is_winner,
                             # the same tau_ratio and retention as the winner: the rule's order alone chose
                             "ties_winner": (not is_winner and winner is not None and r["retention"] >= min_retention
                                             and rank(r) == rank(winner))})
    return {"split": split, "criterion": SELECT_RULE.format(min=min_retention), "min_retention": min_retention,
            "for_reading_only": split != "val", "overall": brief(max(ok, key=rank, default=None)),
            "families": {name: brief(r) for name, r in pick.items()}, "registry": registry}


def selection_markdown(sel: dict) -> str:
    lines = [f"## Selection ({'validation' if sel['split'] == 'val' else 'TEST clips: for reading only, never choose here'})",
             "", f"Criterion: {sel['criterion']}.", ""]
    best = sel["overall"]
    lines.append(f"Overall winner: **{best['family']}, {best['setting']}**: tau_ratio {best['tau_ratio']:.3f} vs "
                 f"{best['counterpart']}, retention {best['retention']:.3f}." if best else
                 "Overall winner: none (no lvspec setting reaches the retention bar).")
    lines += ["", "| family | winner | tau_ratio | retention |", "|---|---|---|---|"]
    for name, r in sel["families"].items():
        lines.append(f"| {name} | {r['setting']} | {r['tau_ratio']:.3f} | {r['retention']:.3f} |" if r else
                     f"| {name} | none reaches the bar | - | - |")
    lines += ["", "Registered variants (testbed/variants.py):", ""]
    for item in sel["registry"]:
        reg, win = item["registered"], item["family_winner"]
        verdict = ("is its family's winner" if item["is_winner"] else
                   f"ties its family's winner ({win['setting']}: the same tau_ratio and retention)"
                   if item.get("ties_winner") else
                   f"is not its family's winner ({win['setting']} is)" if win else
                   "is in a family where no setting reaches the bar")
        lines.append(f"- `{item['variant']}` ({reg['values']}; tau_ratio {reg['tau_ratio']:.3f}, retention "
                     f"{reg['retention']:.3f}) {verdict}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", choices=sorted(SPLITS), default="val",
                   help="clips to decode: val (default; settings are chosen here) or test (for reading only)")
    p.add_argument("--limit", type=int, default=60, help="clips per setting (0: all of the split)")
    p.add_argument("--out", type=Path, default=REPORTS / "testbed_sweep.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target", default=None, help="target checkpoint (default: the testbed target)")
    p.add_argument("--draft", default=None, help="drafter checkpoint (default: the testbed drafter)")
    p.add_argument("--lambdas", default="0.5,0.7,0.9", help="lambda axis of the lvspec grid")
    p.add_argument("--windows", default="0,2",
                   help="w axis of the lvspec grid (PST never salvaged a token on this grammar: docs/testbed.md)")
    p.add_argument("--shard", default="0/1",
                   help="i/n: run every n-th grid setting from the i-th, plus the reference rows (parallel processes)")
    p.add_argument("--merge", nargs="+", type=Path, default=None,
                   help="merge the JSON outputs of shards into --out (and its .md), running nothing")
    p.add_argument("--select", action="store_true", help="re-read --out, (re)write its selection, run nothing")
    p.add_argument("--min-retention", type=float, default=SELECT_MIN_RETENTION, help="retention bar of the selection")
    p.add_argument("--only", default=None, help="comma-separated methods to run (default: the whole grid)")
    p.add_argument("--anchor-rules", default=None, help="comma-separated anchor rules of the lvspec rows to run (other methods' rows are kept)")
    a = p.parse_args(argv)
    if a.select:
        doc = json.loads(a.out.read_text())
        write(a.out, doc["rows"], doc["meta"], a.min_retention)
        return
    if a.merge:
        parts = [json.loads(f.read_text()) for f in a.merge]
        if len({pt["meta"]["split"] for pt in parts}) != 1:
            raise SystemExit("the shards decoded different splits; merge shards of one split")
        rows, seen = [], set()
        for part in parts:
            for r in part["rows"]:
                if row_key(r["method"], r["params"]) not in seen:  # reference rows: every shard has them
                    seen.add(row_key(r["method"], r["params"]))
                    rows.append(r)
        meta = dict(parts[0]["meta"], minutes=max(pt["meta"]["minutes"] for pt in parts), processes=len(parts),
                    command=(f"{len(parts)} processes, {parts[0]['meta']['command']} (--shard i/{len(parts)}), "
                             f"then python -m testbed.sweep --merge ... --out {a.out}"))
        write(a.out, rows, meta, a.min_retention)
        print(f"merged {len(rows)} rows into {a.out}")
        return
    import torch

    from testbed.checkpoints import checkpoint

    torch.set_num_threads(a.threads)
    models = load_pair(a.target or str(checkpoint("target")), a.draft or str(checkpoint("drafter")))
    docs = prepare_docs(models[1], a.limit, a.split)
    t0 = time.time()
    ar = run_setting(models, docs, [{"res": None}] * len(docs), "ar")["rows"]
    settings = grid(tuple(float(x) for x in a.lambdas.split(",")), tuple(int(x) for x in a.windows.split(",")))
    refs, rest = settings[:len(reference_settings())], settings[len(reference_settings()):]
    index, count = (int(x) for x in a.shard.split("/"))
    settings = refs + rest[index::count]
    if a.only:
        keep = set(a.only.split(","))
        settings = [s for s in settings if s[0] in keep]
    if a.anchor_rules:
        rules = set(a.anchor_rules.split(","))
        settings = [s for s in settings if s[0] != "lvspec" or s[1].get("anchor_rule", "rank") in rules]
    results = []
    for i, (method, params) in enumerate(settings):
        row = run_setting(models, docs, ar, method, **params)
        results.append(row)
        shown = {k: v for k, v in row.items() if not isinstance(v, (list, dict))}
        print(f"[{i + 1}/{len(settings)}] " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                                      for k, v in shown.items()), flush=True)
    meta = {"split": a.split, "task": SPLITS[a.split][1], "clips": len(docs), "max_new_tokens": MAX_NEW_TOKENS,
            "threads": a.threads, "ar_anchor_f1": statistics.fmean(r["f1"] for r in ar),
            "minutes": round((time.time() - t0) / 60, 1), "resamples": RESAMPLES,
            "command": "python -m testbed.sweep " + " ".join(argv if argv is not None else sys.argv[1:])}
    write(a.out, results, meta, a.min_retention)
    print(f"wrote {a.out} and {a.out.with_suffix('.md')}")


def write(out: Path, rows: list[dict], meta: dict, min_retention: float = SELECT_MIN_RETENTION) -> dict:
    """Pair rows with their counterparts, select, and write the JSON and its markdown; returns the selection."""
    compare(rows)
    selection = select(rows, meta["split"], min_retention)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows, "selection": selection}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(rows, meta) + "\n" + selection_markdown(selection))
    print(selection_markdown(selection), flush=True)
    return selection


def _ci(value: Optional[float], ci: Optional[list[float]], digits: int = 3) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def setting_cell(row: dict, name: str) -> Any:
    """A setting column of an lvspec row (target_prob reads no relevance representation; no
    draft_video_keep in the params: the whole video)."""
    p = row["params"]
    if row["method"] != "lvspec":
        return ""
    if name == "relevance_repr" and p["anchor_rule"] == "target_prob":
        return "-"
    return p.get(name, 1.0 if name == "draft_video_keep" else "")


#: (header, cell) of the sweep table
COLUMNS = (
    ("variant", lambda r: r.get("variant") or ""),
    ("method", lambda r: r["method"]),
    *((name, (lambda n: lambda r: setting_cell(r, n))(name)) for name in SETTING_FIELDS),
    ("tau_mean", lambda r: _ci(r.get("tau_mean"), None)),
    ("tau_ratio [95% CI] (vs)", lambda r: f"{_ci(r.get('tau_ratio'), r.get('tau_ratio_ci'))} ({r['counterpart']})"
     if r.get("counterpart") else ""),
    ("acceptance_rate_pooled", lambda r: _ci(r.get("acceptance_rate_pooled"), None)),
    ("acceptance_loose", lambda r: _ci(r.get("acceptance_loose"), None)),
    ("speedup_decode_pooled [95% CI]", lambda r: _ci(r.get("speedup_decode_pooled"), r.get("speedup_decode_pooled_ci"))),
    ("token_rate_speedup_pooled [95% CI]",
     lambda r: _ci(r.get("token_rate_speedup_pooled"), r.get("token_rate_speedup_pooled_ci"))),
    ("exact_match_ar_mean", lambda r: _ci(r.get("exact_match_ar_mean"), None)),
    ("retention [95% CI]", lambda r: _ci(r.get("retention"), r.get("retention_ci"))),
    ("anchor P", lambda r: _ci(r.get("anchor_precision"), None)),
    ("anchor R", lambda r: _ci(r.get("anchor_recall"), None)),
)


def markdown(rows: list[dict], meta: dict) -> str:
    from tabulate import tabulate

    body = [[cell(r) for _, cell in COLUMNS] for r in rows]
    head = (f"Sweep on {meta['clips']} {'validation' if meta['split'] == 'val' else 'TEST'} clips of {meta['task']} "
            f"(ar anchor_f1 {meta['ar_anchor_f1']:.3f}), {meta['threads']} threads, {meta['minutes']} min; bootstrap "
            f"95% intervals over clips ({meta.get('resamples', RESAMPLES)} resamples, seed 0). Command: "
            f"`{meta['command']}`\n\n{SPEED_CAVEAT}\n\n")
    return head + tabulate(body, headers=[h for h, _ in COLUMNS], tablefmt="github", disable_numparse=True) + "\n"


if __name__ == "__main__":
    sys.exit(main())
