"""Short answers against long ones: every speculative method against `ar` on the testbed MCQ task
(one-letter answers, max_new_tokens 8) and caption task (~40-token answers, max_new_tokens 96), under
each draft schedule (docs/speed.md), with where the time of a sample goes.

Models: the trained testbed pair (float32, CPU), loaded and fed as the `lvspec_qwen` backend does;
each method is built by `build_method` from the default model args (plus the setting shown), as the
backend builds it. For every doc, `ar` and every setting decode in turn (the order rotates from doc to
doc), all in this process, so that machine load hits them alike; with `--mcq-repeats` / `--caption-repeats`
R > 1 each doc is decoded in R such passes and each setting keeps its fastest (on a machine shared with
other jobs the fastest of a few passes is the least disturbed; the passes must decode the same tokens);
figures are medians over docs.

Per sample, from `decode(profile=True)`: total = prefill + decode; target prefill; drafter start
(its prefill with the vision tower, the pruning's ranking, the anchor finder); drafting (drafter
forwards); verify (target forwards after prefill); probes (relevance probes in the verify forwards);
engine (the rest of the decode loop). `x of ar` = ar's total / the setting's total (median of
per-sample ratios, and pooled: sum over sum). Caption adds tau, tau_excl, acceptance, exact match
with ar, retention (anchor_f1 / ar's) and the decode and end-to-end speedups (lvspec_eval.metrics.aggregate).

    OMP_NUM_THREADS=1 python -m benchmarks.draft_schedule [--mcq 60] [--mcq-repeats 3] [--caption 24]
        [--schedules auto,fixed] [--out reports/draft_schedule.md]

`--schedules default` runs each method with no draft_schedule arg at all (the code's own default: also
valid on a checkout from before draft_schedule existed, for before/after comparisons).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from benchmarks.measure import SETTINGS, label, machine, publish  # noqa: E402

PHASES = ("t_prefill", "d_prefill", "drafting", "verify", "probes", "engine")
CAPTION_STATS = ("tau_mean", "tau_excl_pooled", "acceptance_rate_pooled", "exact_match_ar_mean",
                 "speedup_decode_median", "speedup_decode_pooled", "speedup_e2e_median", "speedup_e2e_pooled")


def phases(res: Any) -> dict[str, float]:
    """Where one decode's time went (seconds; profile=True). A DecodeResult from before `draft_prefill_s` /
    `probe_s` existed (a before/after comparison) counts them as 0."""
    draft_prefill, probes = getattr(res, "draft_prefill_s", 0.0), getattr(res, "probe_s", 0.0)
    engine = res.decode_s - res.draft_forward_s - res.target_forward_s - probes
    return {"total": res.prefill_s + res.decode_s, "t_prefill": res.prefill_s - draft_prefill,
            "d_prefill": draft_prefill, "drafting": res.draft_forward_s, "verify": res.target_forward_s,
            "probes": probes, "engine": engine}



def run_task(models: tuple[Any, Any, Any], task: str, limit: int, schedules: list[str], repeats: int) -> dict[str, Any]:
    """Decode `limit` docs of testbed task `task` with ar and every setting under every schedule, `repeats`
    passes each (a sample's figures are those of its fastest pass)."""
    from lvspec_eval.config import DecodeConfig
    from lvspec_eval.engine import build_method
    from lvspec_eval.metrics import aggregate
    from lvspec_eval.metrics.records import decode_fields, paired_fields
    from testbed import grammar as g

    base, target, draft = models
    gen = task_generation(task)
    tok = target.tokenizer
    runs = [("ar", {}, "-", "ar")] + [(m, {**extra, **({} if s == "default" else {"draft_schedule": s})}, s,
                                       label(m, extra)) for m, extra in SETTINGS for s in schedules]
    built = [build_method(base.replace(method=m, **extra)) for m, extra, _, _ in runs]
    cfgs = [DecodeConfig(max_new_tokens=int(gen["max_new_tokens"]), eos_ids=(tok.eos_token_id,),
                         num_draft_tokens=b.args.num_draft_tokens) for b in built]
    docs = testbed_docs(target, task, limit)
    built[1].decode(target, draft, docs[0][1], cfgs[1], seed=0)  # warm-up, not recorded
    results: list[list[Any]] = [[None] * len(docs) for _ in runs]
    for d, (doc, inputs) in enumerate(docs):
        order = list(range(len(runs)))
        order = order[d % len(order):] + order[:d % len(order)]
        for _ in range(repeats):  # every setting once per pass; a sample's time is its fastest pass
            for i in order:
                res = built[i].decode(target, None if i == 0 else draft, inputs, cfgs[i], seed=doc["doc_id"],
                                      profile=True)
                best = results[i][d]
                if best is not None and res.tokens != best.tokens:
                    raise RuntimeError(f"{runs[i][3]} decoded doc {doc['doc_id']} differently in two passes")
                if best is None or res.prefill_s + res.decode_s < best.prefill_s + best.decode_s:
                    results[i][d] = res
    text = [[tok.decode(r.tokens, skip_special_tokens=True) for r in row] for row in results]
    rows = []
    for i, (method, _, schedule, name) in enumerate(runs):
        ph = [phases(r) for r in results[i]]
        ar_ph = [phases(r) for r in results[0]]
        row: dict[str, Any] = {
            "method": method, "setting": name, "schedule": schedule, "samples": len(docs),
            "x_of_ar_median": statistics.median(a["total"] / p["total"] for a, p in zip(ar_ph, ph)),
            "x_of_ar_pooled": sum(a["total"] for a in ar_ph) / sum(p["total"] for p in ph),
            "total_ms": 1e3 * statistics.median(p["total"] for p in ph),
            **{f"{k}_ms": 1e3 * statistics.median(p[k] for p in ph) for k in PHASES},
            "new_tokens_median": statistics.median(len(r.tokens) for r in results[i]),
            "rounds_median": statistics.median(r.rounds for r in results[i]),
            "drafter_started": sum(p["d_prefill"] > 0 or r.proposed > 0 for p, r in zip(ph, results[i])),
            "exact_match_ar": sum(r.tokens == a.tokens for r, a in zip(results[i], results[0])) / len(docs),
            "params": built[i].args.rule_params(),
        }
        if task == "caption":
            f1 = [g.score_caption(t, doc["attributes"])["anchor_f1"] for t, (doc, _) in zip(text[i], docs)]
            ar_f1 = [g.score_caption(t, doc["attributes"])["anchor_f1"] for t, (doc, _) in zip(text[0], docs)]
            row["anchor_f1"] = statistics.fmean(f1)
            row["retention"] = statistics.fmean(f1) / statistics.fmean(ar_f1) if statistics.fmean(ar_f1) else None
            if i:
                k = cfgs[i].num_draft_tokens
                records = [{**decode_fields(r, k), "text": t, **paired_fields(r, a, t, at)}
                           for r, a, t, at in zip(results[i], results[0], text[i], text[0])]
                row.update(aggregate.compute(records, CAPTION_STATS))
        else:
            row["accuracy"] = statistics.fmean(float(g.parse_mcq(t) == doc["answer"]) for t, (doc, _) in zip(text[i], docs))
        rows.append(row)
    return {"task": f"lvspec_testbed_{task}", "max_new_tokens": int(gen["max_new_tokens"]), "rows": rows,
            "tokens": {row["setting"] + f" [{row['schedule']}]": [r.tokens for r in results[i]]
                       for i, row in enumerate(rows)}}


def task_generation(task: str) -> dict[str, Any]:
    from benchmarks.measure import task_config

    return task_config(task)


def testbed_docs(target: Any, task: str, limit: int) -> list[tuple[dict, dict]]:
    from benchmarks.measure import testbed_docs as docs

    return docs(target, task, limit)


def markdown(data: dict[str, Any]) -> str:
    from tabulate import tabulate

    lines = [f"Command: `{data['command']}`", "",
             f"{data['machine']}; torch threads {data['threads']}; {data['minutes']:.1f} min. Times in ms, medians "
             "over docs; `x of ar` = ar's total / the setting's total per sample (median, and pooled: sum over sum).", ""]
    for result in data["tasks"]:
        lines += [f"### {result['task']} (max_new_tokens {result['max_new_tokens']}, {result['rows'][0]['samples']} docs)", ""]
        head = ["setting", "schedule", "x of ar (median)", "x of ar (pooled)", "total ms", "target prefill",
                "drafter start", "drafting", "verify", "probes", "engine", "tokens", "rounds", "drafter started",
                "exact = ar"]
        caption = result["task"].endswith("caption")
        if caption:
            head += ["tau", "tau_excl", "retention", "decode speedup (median / pooled)", "e2e speedup (median / pooled)"]
        else:
            head += ["accuracy"]
        rows = []
        for r in result["rows"]:
            row = [r["setting"], r["schedule"], f"{r['x_of_ar_median']:.3f}", f"{r['x_of_ar_pooled']:.3f}",
                   f"{r['total_ms']:.1f}", *[f"{r[f'{k}_ms']:.1f}" for k in PHASES], f"{r['new_tokens_median']:g}",
                   f"{r['rounds_median']:g}", f"{r['drafter_started']}/{r['samples']}", f"{r['exact_match_ar']:.3f}"]
            if caption:
                sp = lambda a, b, r=r: "-" if r.get(a) is None else f"{r[a]:.2f} / {r[b]:.2f}"  # noqa: E731
                row += ["-" if r.get("tau_mean") is None else f"{r['tau_mean']:.2f}",
                        "-" if r.get("tau_excl_pooled") is None else f"{r['tau_excl_pooled']:.2f}",
                        f"{r['retention']:.3f}", sp("speedup_decode_median", "speedup_decode_pooled"),
                        sp("speedup_e2e_median", "speedup_e2e_pooled")]
            else:
                row += [f"{r['accuracy']:.3f}"]
            rows.append(row)
        lines += [tabulate(rows, headers=head, tablefmt="github"), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:

    import torch

    from benchmarks.measure import testbed_pair

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mcq", type=int, default=60, help="MCQ docs (0: skip the task)")
    p.add_argument("--caption", type=int, default=24, help="caption docs (0: skip the task)")
    p.add_argument("--mcq-repeats", type=int, default=3, help="passes per MCQ doc (its time: the fastest)")
    p.add_argument("--caption-repeats", type=int, default=1, help="passes per caption doc (its time: the fastest)")
    p.add_argument("--schedules", default="auto,fixed", help="comma-separated: auto, fixed, default")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target", default=None, help="target checkpoint (default: the testbed target)")
    p.add_argument("--draft", default=None, help="drafter checkpoint (default: the testbed drafter)")
    p.add_argument("--out", type=Path, default=None, help="markdown tables here, the data as JSON beside it")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    models = testbed_pair(a.target, a.draft)
    schedules = a.schedules.split(",")
    tasks = [run_task(models, task, n, schedules, reps) for task, n, reps in
             (("mcq", a.mcq, a.mcq_repeats), ("caption", a.caption, a.caption_repeats)) if n]
    data = {"command": "python -m benchmarks.draft_schedule " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine(),
            "threads": torch.get_num_threads(), "minutes": (time.time() - t0) / 60, "tasks": tasks}
    publish(markdown(data), data, a.out)


if __name__ == "__main__":
    main()
