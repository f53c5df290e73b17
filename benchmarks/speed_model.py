"""Does the speed model hold? Measured decode speedup of every method against the one predicted from
the measured forward costs and the measured acceptance, on the testbed caption task (docs/speed.md).

In one process, with the trained testbed pair (float32, CPU) loaded as the `lvspec_qwen` backend loads it:
1. for each doc, first its forward costs (`benchmarks.measure.round_costs` on the doc's prompt, each
   forward timed in the pattern the loop runs it in: `ar` steps back to back -> t_ar; rounds of K drafter
   steps and a target block -> the drafter's first step of a round t_D1(p) (p = 1..3 tokens fed), its
   one-token step t_D, the target's m-token block t_T(m), m = 1..K+1; medians of `--reps`); then its decodes: `ar` and every method at
   its defaults (`build_method`, as the backend builds it; `lvspec` also as this project's earlier
   default: the attention relevance probe, unpruned drafter), in turns (the order rotates from doc to doc). The costs sit next to
   the decodes they predict, so the machine's load drifts alike for both;
3. per sample, the predicted model-forward time of each decode from its own rounds
   (`benchmarks.measure.predicted_decode_s`): sum over rounds of t_T(k_r + 1) + t_D1(p_r) + (k_r - 1) t_D
   (`ar`: rounds x t_ar); predicted speedup = predicted ar time / predicted method time, against the
   measured ar decode_s / decode_s (prefill excluded). Median over samples and pooled (sum over sum). The
   engine-overhead term: each decode's measured time outside model forwards (`decode(profile=True)`) added to
   its predicted forward time ("forwards + engine"); "forwards only" leaves it out.
   Beside it the closed forms from the run's tau: (tau + 1) t_ar / (K t_D + t_T(K+1)) and Leviathan's
   (1 - a^(K+1)) / ((1 - a)(K c + 1)), which assumes a verify block costs one step.

    OMP_NUM_THREADS=1 python -m benchmarks.speed_model [--docs 24] [--reps 3] [--out reports/speed_model.md]

Where a gap comes from: `decode(profile=True)` times every model forward in the loop; the table gives the
loop's forward time against the predicted one, and the engine's share (decode time outside forwards).
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




def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from benchmarks.measure import (cost_model, leviathan, per_token_acceptance, predicted_decode_s, round_costs,
                                    task_config, testbed_docs, testbed_pair)
    from lvspec_eval.config import DecodeConfig
    from lvspec_eval.engine import build_method

    torch.set_num_threads(args.threads)
    base, target, draft = testbed_pair(args.target, args.draft)
    docs = testbed_docs(target, "caption", args.docs)
    methods = [build_method(base.replace(method="ar"))] + [build_method(base.replace(method=m, **x)) for m, x in SETTINGS]
    k = methods[1].args.num_draft_tokens
    cfg = DecodeConfig(max_new_tokens=int(task_config("caption")["max_new_tokens"]),
                       eos_ids=(target.tokenizer.eos_token_id,), num_draft_tokens=k)
    methods[1].decode(target, draft, docs[0][1], cfg, seed=0)  # warm-up, not recorded
    results: list[list[Any]] = [[] for _ in methods]
    per_doc = []
    for d, (doc, inputs) in enumerate(docs[: args.docs]):
        # this doc's forward costs, measured right before its decodes (the machine's load drifts)
        per_doc.append(round_costs(target, draft, inputs, k, args.reps))
        order = list(range(len(methods)))
        for i in order[d % len(order):] + order[:d % len(order)]:
            results[i].append(methods[i].decode(target, draft if i else None, inputs, cfg, seed=doc["doc_id"],
                                                profile=True))
    pred = [[predicted_decode_s(r.per_step_drafted, r.per_step_accepted, c) for r, c in zip(row, per_doc)]
            for row in results]
    med = statistics.median
    costs = {"ar_step_s": med(c["ar_step_s"] for c in per_doc), "draft_step_s": med(c["draft_step_s"] for c in per_doc),
             "draft_first_s": {p: med(c["draft_first_s"][p] for c in per_doc) for p in per_doc[0]["draft_first_s"]},
             "target_block_s": {m: med(c["target_block_s"][m] for c in per_doc) for m in per_doc[0]["target_block_s"]}}
    costs["c"] = costs["draft_step_s"] / costs["ar_step_s"]
    t_block = costs["target_block_s"]
    def with_engine(predicted_s: float, res: Any) -> float:
        return predicted_s + res.decode_s - res.target_forward_s - res.draft_forward_s

    rows = []
    for i in range(1, len(methods)):
        name, extra = SETTINGS[i - 1]
        ar, runs = results[0], results[i]
        tau = sum(r.accepted for r in runs) / sum(r.rounds for r in runs)  # tau_excl, pooled
        measured = [a.decode_s / r.decode_s for a, r in zip(ar, runs)]
        predicted = [pa / pr for pa, pr in zip(pred[0], pred[i])]
        m_pooled = sum(a.decode_s for a in ar) / sum(r.decode_s for r in runs)
        p_pooled = sum(pred[0]) / sum(pred[i])
        a = per_token_acceptance(tau, k)
        row = {
            "setting": label(name, extra), "params": methods[i].args.rule_params(), "tau_excl_pooled": tau,
            "measured_median": statistics.median(measured), "measured_pooled": m_pooled,
            "predicted_median": statistics.median(predicted), "predicted_pooled": p_pooled,
            "gap_median": statistics.median(predicted) / statistics.median(measured) - 1,
            "gap_pooled": p_pooled / m_pooled - 1,
            # the same with each decode's measured engine time (decode time outside forwards) added to its forwards
            "with_engine_median": statistics.median(with_engine(pa, a) / with_engine(pr, r)
                                                    for pa, a, pr, r in zip(pred[0], ar, pred[i], runs)),
            "with_engine_pooled": sum(with_engine(pa, a) for pa, a in zip(pred[0], ar))
            / sum(with_engine(pr, r) for pr, r in zip(pred[i], runs)),
            "forward_share_ar": sum(pred[0]) / sum(r.decode_s for r in ar),
            "forward_share": sum(pred[i]) / sum(r.decode_s for r in runs),
            # where a gap comes from: the forwards in the loop against the isolated costs, and the engine
            "in_loop_forward_vs_predicted": sum(r.target_forward_s + r.draft_forward_s for r in runs) / sum(pred[i]),
            "ar_in_loop_forward_vs_predicted": sum(r.target_forward_s for r in ar) / sum(pred[0]),
            "engine_share": sum(r.decode_s - r.target_forward_s - r.draft_forward_s for r in runs)
            / sum(r.decode_s for r in runs),
            "ar_engine_share": sum(r.decode_s - r.target_forward_s for r in ar) / sum(r.decode_s for r in ar),
            "closed_form": cost_model(tau, k, costs["ar_step_s"], costs["draft_step_s"], t_block[k + 1]),
            "leviathan": leviathan(a, k, costs["c"]), "a": a,
        }
        row["gap_with_engine_median"] = row["with_engine_median"] / row["measured_median"] - 1
        row["gap_with_engine_pooled"] = row["with_engine_pooled"] / row["measured_pooled"] - 1
        rows.append(row)
    return {"costs": costs, "k": k, "docs": args.docs, "rows": rows,
            "per_sample": {label(*([("ar", {})] + list(SETTINGS))[i]): [
                {"decode_s": r.decode_s, "predicted_s": p, "target_forward_s": r.target_forward_s,
                 "draft_forward_s": r.draft_forward_s, "rounds": r.rounds, "new_tokens": len(r.tokens)}
                for r, p in zip(results[i], pred[i])] for i in range(len(methods))}}


def markdown(data: dict[str, Any]) -> str:
    from tabulate import tabulate

    c = data["costs"]
    t, first = c["target_block_s"], c["draft_first_s"]
    lines = [f"Command: `{data['command']}`", "", f"{data['machine']}; torch threads {data['threads']}; "
             f"{data['minutes']:.1f} min.", "", "### Forward costs, each timed in the loop's pattern (ms, medians over docs)", ""]
    rows = [[m, f"{1e3 * t[m]:.2f}", f"{t[m] / c['ar_step_s']:.2f}", f"{1e3 * first[m]:.2f}" if m in first else ""]
            for m in sorted(t)]
    lines += [tabulate(rows, headers=["tokens fed", "target block t_T(m) after drafting", "t_T(m) / t_ar",
                                      "drafter first step t_D1(m) after a verify"], tablefmt="github"), "",
              f"t_ar (target step between target steps) = {1e3 * c['ar_step_s']:.2f} ms; t_D (drafter step between drafter "
              f"steps) = {1e3 * c['draft_step_s']:.2f} ms; c = t_D / t_ar = {c['c']:.3f}; K = {data['k']}.", "",
              f"### Speedup: measured against predicted ({data['docs']} caption docs, decode only)", ""]
    rows = [[r["setting"], f"{r['tau_excl_pooled']:.2f}", f"{r['measured_median']:.3f} / {r['measured_pooled']:.3f}",
             f"{r['with_engine_median']:.3f} / {r['with_engine_pooled']:.3f}",
             f"{100 * r['gap_with_engine_median']:+.1f}% / {100 * r['gap_with_engine_pooled']:+.1f}%",
             f"{r['predicted_median']:.3f} / {r['predicted_pooled']:.3f}",
             f"{100 * r['gap_median']:+.1f}% / {100 * r['gap_pooled']:+.1f}%", f"{r['in_loop_forward_vs_predicted']:.3f}",
             f"{100 * r['engine_share']:.1f}%", f"{r['closed_form']:.3f}", f"{r['leviathan']:.3f}"] for r in data["rows"]]
    lines += [tabulate(rows, headers=["method", "tau_excl", "measured (median / pooled)",
                                      "predicted: forwards + engine (median / pooled)", "gap",
                                      "predicted: forwards only (median / pooled)", "gap",
                                      "loop forwards / predicted forwards", "engine share", "closed form (tau)",
                                      "Leviathan (a, c)"], tablefmt="github")]
    r0 = data["rows"][0]
    lines += ["", f"`ar`: loop forwards / predicted = {r0['ar_in_loop_forward_vs_predicted']:.3f}, engine share "
                  f"{100 * r0['ar_engine_share']:.1f}%."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=24, help="caption docs decoded by every method")
    p.add_argument("--reps", type=int, default=2, help="cost cycles per doc (before its decodes)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target", default=None, help="target checkpoint (default: the testbed target)")
    p.add_argument("--draft", default=None, help="drafter checkpoint (default: the testbed drafter)")
    p.add_argument("--out", type=Path, default=None, help="markdown here, the data as JSON beside it")
    a = p.parse_args(argv)
    t0 = time.time()
    data = run(a)
    data.update(command="python -m benchmarks.speed_model " + " ".join(argv if argv is not None else sys.argv[1:]),
                machine=machine(),
                threads=torch.get_num_threads(), minutes=(time.time() - t0) / 60)
    publish(markdown(data), data, a.out)


if __name__ == "__main__":
    main()
