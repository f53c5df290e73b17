"""`make demo`: the main job on the embedded default, the offline testbed.

Runs both testbed tasks (`lvspec_testbed_caption`, `lvspec_testbed_mcq`; the first 60 of the 200
test clips each by default, `--limit 0` for all) with `ar`, `sd`, `lvspec`, `fly` and `random`
through the real lmms-eval CLI (`--model
lvspec_qwen`), with the trained tiny Qwen2.5-VL target and drafter (materialised from the
compact weights in `testbed/weights/` into the cache folder on first use), then
prints one table per task from `lvspec-report`'s summary: tau, acceptance rate, decode speedup
over `ar`, exact match with `ar`, task score and retention. Speedups come from
`paired_baseline=true`: every sample is also decoded with `ar` in the same process, so each
ratio is measured side by side (machines are shared and noisy).

With `--family llava_ov` the same runs use the trained tiny LLaVA-OneVision pair (`--model
lvspec_llava_ov`, `make testbed-llava`); with `--family qwen3_vl` the Qwen3-VL pair (`--model
lvspec_qwen3_vl`, `make testbed-qwen3`). A method written `METHOD@self` runs Self-SD: the target
drafts for itself from a pruned video (`draft_pretrained=self`); its rows read "METHOD (Self-SD)".

Usage: python -m testbed.demo [--methods ar,sd,lvspec,fly,random] [--tasks caption,mcq]
                                  [--family qwen|llava_ov|qwen3_vl] [--limit N] [--out reports/demo]
                                  [--model-args k=v,...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from testbed.runs import count_lines, run_lmms
from testbed.families import PAIRS

from testbed.paths import REPORTS, TESTBED_TASK_DIR as TASK_DIR
TASKS = {"caption": "lvspec_testbed_caption", "mcq": "lvspec_testbed_mcq"}
#: (summary field, header): the headers are the glossary's names (lvspec_eval.glossary.METRICS).
COLUMNS = [("method", "method"), ("tau_mean", "tau_mean"), ("tau_excl_mean", "tau_excl_mean"),
           ("acceptance_rate_pooled", "acceptance_rate_pooled"), ("acceptance_loose", "acceptance_loose"),
           ("speedup_decode_pooled", "speedup_decode_pooled"), ("token_rate_speedup_pooled", "token_rate_speedup_pooled"),
           ("new_tokens_mean", "new_tokens_mean"), ("ar_new_tokens_mean", "ar_new_tokens_mean"),
           ("exact_match_ar_mean", "exact_match_ar_mean"), ("score", "score"), ("retention", "retention"),
           ("failed", "failed")]


def label(row: dict) -> str:
    return f"{row['method']}@self" if row.get("draft") == "self" else row["method"]


def table(summary_rows: list[dict], methods: list[str]) -> str:
    from tabulate import tabulate

    order = {m: i for i, m in enumerate(methods)}
    rows = sorted(summary_rows, key=lambda r: order.get(label(r), 99))
    body = [[(f"{r['method']} (Self-SD)" if label(r).endswith("@self") else r["method"]) if key == "method"
             else r.get(key) for key, _ in COLUMNS] for r in rows]
    return tabulate(body, headers=[h for _, h in COLUMNS], tablefmt="github", floatfmt=".3f", missingval="-")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="ar,sd,lvspec,fly,random")
    p.add_argument("--tasks", default="caption,mcq")
    p.add_argument("--family", choices=sorted(PAIRS), default="qwen", help="which trained testbed pair")
    p.add_argument("--limit", type=int, default=60,
                   help="samples per task (default 60, about 12 minutes on 2 cores; 0: all 200, about 45 minutes)")
    p.add_argument("--out", default=str(REPORTS / "demo"))
    p.add_argument("--model-args", default="", help="extra model args for every run, e.g. num_draft_tokens=8")
    a = p.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    methods = a.methods.split(",")
    if "ar" not in methods:
        methods.insert(0, "ar")  # retention and exact match pair with the ar run
    t_start = time.time()
    print("[demo] materialising the testbed checkpoints (once, into the cache folder) ...", flush=True)
    from testbed.checkpoints import checkpoint

    model, target_role, draft_role, described = PAIRS[a.family]
    target, draft = str(checkpoint(target_role)), str(checkpoint(draft_role))
    print(f"[demo] target {target}\n[demo] drafter {draft}", flush=True)
    runs: dict[str, list[Path]] = {}
    for task in a.tasks.split(","):
        if task not in TASKS:
            raise SystemExit(f"unknown task {task!r}; use {','.join(TASKS)}")
        for spec in methods:
            method, _, drafter = spec.partition("@")
            if drafter not in ("", "self"):
                raise SystemExit(f"unknown drafter in {spec!r}: write METHOD or METHOD@self (Self-SD)")
            total = a.limit or count_lines(TASK_DIR / f"{task}.jsonl")
            name = f"{task}_{method}" + ("_self" if drafter else "")
            stats = run_lmms(method, target, drafter or draft, task=TASKS[task], task_dir=TASK_DIR, out=out,
                             name=name, extra_args=a.model_args, limit=a.limit, progress_total=total, model=model)
            runs.setdefault(task, []).extend([stats, out / "lmms" / name])

    from lvspec_eval.report.inputs import load_inputs
    from lvspec_eval.report.pairing import build_groups
    from lvspec_eval.report.summary import summarize

    sections = []
    for task, paths in runs.items():
        summary = summarize(build_groups(load_inputs(paths)), resamples=1000, seed=0)
        text = table(summary.rows, methods)
        metric = summary.rows[0].get("metric") if summary.rows else "-"
        sections.append(f"### {TASKS[task]} (score: {metric})\n\n{text}\n")
        print(f"\n{TASKS[task]} (score = {metric})\n{text}", flush=True)
    minutes = (time.time() - t_start) / 60
    note = (f"Trained tiny testbed pair ({described}; --model {model}), float32, CPU, "
            f"{os.cpu_count()} cores; {minutes:.1f} min in all. ar decoded side by side in the same process "
            f"(paired_baseline=true). Definitions of every column: docs/records.md (run-level statistics).")
    cmd = "python -m testbed.demo " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "summary.md").write_text(f"# make demo\n\nCommand: `{cmd.strip()}`\n\n{note}\n\n" + "\n".join(sections))
    print(f"\n{note}\nFiles: {out} (summary.md, records/, lmms/, logs/)", flush=True)


if __name__ == "__main__":
    main()
