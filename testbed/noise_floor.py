"""The noise floor of retention: `ar` against `ar` on both testbed tasks, in separate processes.

    python -m testbed.noise_floor [--limit 60] [--tasks caption,mcq] [--out reports/noise_floor.json]
                                  [--workdir reports/noise_floor]

A loose method's retention means something only above what plain greedy decoding already varies by.
Per task, four lmms-eval CLI runs of `method=ar` with the trained testbed target (`--model lvspec_qwen`,
test clips): bfloat16 twice and float32 twice, each in its own process. Three comparisons, per doc:

* bfloat16, process 2 against process 1 (the paper's and lmms-eval's usual dtype: is a rerun the same?)
* float32, process 2 against process 1 (the testbed's dtype)
* bfloat16 against float32 (process 1 each: what the dtype alone changes)

each as exact-match rate (tokens and text equal), mean token edit similarity, and score retention
(sum of the second run's task score over the first's; glossary.METRICS["retention"]), with bootstrap
95% intervals over docs (lvspec_eval.metrics.aggregate). Writes a JSON (read by `python -m testbed.report`)
and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from lvspec_eval.metrics import aggregate
from testbed.paths import REPORTS, TESTBED_TASK_DIR as TASK_DIR

#: short name -> (lmms-eval task, its score)
TASKS = {"caption": ("lvspec_testbed_caption", "anchor_f1"), "mcq": ("lvspec_testbed_mcq", "accuracy")}
#: (run name, dtype) of the four runs per task
RUNS = (("bf16_1", "bfloat16"), ("bf16_2", "bfloat16"), ("fp32_1", "float32"), ("fp32_2", "float32"))
#: (label, reference run, compared run)
COMPARISONS = (("bfloat16, process 2 vs 1", "bf16_1", "bf16_2"), ("float32, process 2 vs 1", "fp32_1", "fp32_2"),
               ("bfloat16 vs float32", "fp32_1", "bf16_1"))
RESAMPLES = 1000


def read_run(stats: Path, lmms: Path, task: str, metric: str) -> dict[Any, dict[str, Any]]:
    """doc_id -> {tokens, text, score} of one ar run (its records and lmms-eval's per-sample scores)."""
    from lvspec_eval.report.inputs import load_inputs

    inputs = load_inputs([stats, lmms], metric)
    scores = next((r.scores.get(task) for r in inputs.runs if r.key is not None), None)
    if not scores:
        raise SystemExit(f"no per-sample {metric} of {task} under {lmms}; see the run's log")
    return {r["doc_id"]: {"tokens": r["tokens"], "text": r["text"], "score": scores.get(r["doc_id"])}
            for _, r in inputs.records if not r.get("error")}


def compare(first: dict[Any, dict], second: dict[Any, dict], resamples: int = RESAMPLES) -> dict[str, Any]:
    """Exact match, edit similarity and score retention of `second` against `first`, over their shared docs."""
    from lvspec_eval.metrics.records import edit_similarity

    docs = [d for d in first if d in second]
    exact = [float(first[d]["tokens"] == second[d]["tokens"] and first[d]["text"] == second[d]["text"]) for d in docs]
    sims = [edit_similarity(second[d]["tokens"], first[d]["tokens"]) for d in docs]
    scored = [d for d in docs if first[d]["score"] is not None and second[d]["score"] is not None]
    mine, theirs = [second[d]["score"] for d in scored], [first[d]["score"] for d in scored]
    return {
        "docs": len(docs),
        "exact_match": aggregate.mean(exact), "exact_match_ci": aggregate.bootstrap_mean(exact, resamples, 0),
        "edit_sim": aggregate.mean(sims), "edit_sim_ci": aggregate.bootstrap_mean(sims, resamples, 0),
        "differing_docs": [d for d, e in zip(docs, exact) if not e],
        "score_first": aggregate.mean(theirs), "score_second": aggregate.mean(mine),
        "retention": aggregate.ratio(sum(mine), sum(theirs)) if scored else None,
        "retention_ci": aggregate.bootstrap_ratio(mine, theirs, resamples, 0) if scored else None,
    }


def _ci(value: Any, ci: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def markdown(doc: dict) -> str:
    from tabulate import tabulate

    rows = [[task, c["comparison"], c["docs"], _ci(c["exact_match"], c["exact_match_ci"]),
             _ci(c["edit_sim"], c["edit_sim_ci"]), _ci(c["retention"], c["retention_ci"])]
            for task, comps in doc["tasks"].items() for c in comps]
    table = tabulate(rows, headers=["task", "ar against ar", "docs", "exact match [95% CI]", "edit sim [95% CI]",
                                    "score retention [95% CI]"], tablefmt="github", disable_numparse=True)
    meta = doc["meta"]
    return (f"Noise floor of retention: `ar` against `ar`, each run its own lmms-eval process, {meta['clips']} test "
            f"clips per task, trained testbed target, CPU ({meta['cores']} cores), {meta['minutes']} min. Command: "
            f"`{meta['command']}`\n\n{table}\n")


def main(argv: list[str] | None = None) -> None:
    from testbed.checkpoints import checkpoint
    from testbed.runs import run_lmms

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=60, help="test clips per task (0: all 200)")
    p.add_argument("--tasks", default="caption,mcq")
    p.add_argument("--out", type=Path, default=REPORTS / "noise_floor.json")
    p.add_argument("--workdir", type=Path, default=REPORTS / "noise_floor", help="where the runs' files go")
    a = p.parse_args(argv)
    target = str(checkpoint("target"))
    work = a.workdir.resolve()
    t0 = time.time()
    result: dict[str, list[dict]] = {}
    for short in a.tasks.split(","):
        if short not in TASKS:
            raise SystemExit(f"unknown task {short!r}; use {','.join(TASKS)}")
        task, metric = TASKS[short]
        runs = {}
        for name, dtype in RUNS:
            stats = run_lmms("ar", target, target, task=task, task_dir=TASK_DIR, out=work, name=f"{short}_{name}",
                             limit=a.limit, dtype=dtype, progress_total=a.limit or None)
            runs[name] = read_run(stats, work / "lmms" / f"{short}_{name}", task, metric)
        result[task] = [{"comparison": label, "reference": ref, "compared": other, "metric": metric,
                         **compare(runs[ref], runs[other])} for label, ref, other in COMPARISONS]
    meta = {"command": "python -m testbed.noise_floor " + " ".join(argv if argv is not None else sys.argv[1:]),
            "clips": a.limit or "all", "split": "test", "cores": os.cpu_count(), "resamples": RESAMPLES,
            "minutes": round((time.time() - t0) / 60, 1), "model": "lvspec_qwen (trained testbed target)"}
    doc = {"meta": meta, "tasks": result}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    text = markdown(doc)
    a.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
