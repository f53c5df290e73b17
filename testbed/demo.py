"""`make demo`: the main job on the embedded default, the offline testbed.

Runs both testbed tasks (`lvspec_testbed_caption`, `lvspec_testbed_mcq`: TEST clips, the first 60
of 200 each by default, `--limit 0` for all) with the named variants of testbed/variants.py side by
side: the paper's `lvspec` (and its lossless counterpart `specvlm`, the same pruned drafter input),
this project's `lvspec+attention` and `lvspec+target_prob`, `sd`, FLy and the paper's `random`
control, through the real lmms-eval CLI (`--model lvspec_qwen`), with the trained tiny Qwen2.5-VL
target and drafter (materialised from the compact weights in `testbed/weights/` into the cache
folder on first use). Every loose variant's lossless counterpart is added when not asked for, and
`ar` always runs. Settings are chosen on the validation clips (`python -m testbed.sweep`), never
here (docs/testbed.md).

Prints one table per task from `lvspec-report`'s summary (lvspec_eval.report.summary): tau_mean,
tau_ratio to the lossless counterpart (paired by doc), decode speedup over `ar` by time and by token
rate, exact match with `ar`, task score and retention, with bootstrap 95% intervals over clips.
Speedups come from `paired_baseline=true`: every sample is also decoded with `ar` in the same
process, so each ratio is measured side by side (machines are shared and noisy); `--jobs` runs (2 on a
2-core machine) go at a time, one torch thread each per core. Writes
`summary.md` and `summary.json` (read by `python -m testbed.report`) into `--out`.

With `--family llava_ov` the same runs use the trained tiny LLaVA-OneVision pair (`--model
lvspec_llava_ov`, `make testbed-llava`); with `--family qwen3_vl` the Qwen3-VL pair (`--model
lvspec_qwen3_vl`, `make testbed-qwen3`). A variant written `NAME@self` runs Self-SD: the target
drafts for itself from a pruned video (`draft_pretrained=self`); its rows read "NAME (Self-SD)".

Usage: python -m testbed.demo [--methods ar,sd,specvlm,lvspec,lvspec+attention,...] [--tasks caption,mcq]
                                  [--family qwen|llava_ov|qwen3_vl] [--limit N] [--out reports/demo]
                                  [--model-args k=v,...] [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from lvspec_eval.report.lmms_files import parse_model_args
from testbed import variants
from testbed.runs import Spawn, count_lines, run_lmms
from testbed.families import PAIRS

from testbed.paths import REPORTS, TESTBED_TASK_DIR as TASK_DIR
TASKS = {"caption": "lvspec_testbed_caption", "mcq": "lvspec_testbed_mcq"}
#: The default variants (testbed/variants.py); counterparts are added where missing.
DEFAULT_VARIANTS = "ar,sd,specvlm,lvspec,lvspec+attention,lvspec+target_prob,fly,random"


def _ci(value: Optional[float], ci: Optional[list[float]], digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


#: (header, cell) of the demo table; headers are the glossary's names (lvspec_eval.glossary.METRICS).
COLUMNS = (
    ("variant", lambda r: r["variant_label"]),
    ("origin", lambda r: r["origin"]),
    ("vs (lossless, same drafter input)", lambda r: r.get("counterpart_variant") or "-"),
    ("tau_mean", lambda r: _ci(r.get("tau_mean"), None)),
    ("tau_ratio [95% CI]", lambda r: _ci(r.get("tau_ratio"), r.get("tau_ratio_ci"))),
    ("speedup_decode_pooled [95% CI]", lambda r: _ci(r.get("speedup_decode_pooled"), r.get("speedup_decode_pooled_ci"))),
    ("token_rate_speedup_pooled [95% CI]",
     lambda r: _ci(r.get("token_rate_speedup_pooled"), r.get("token_rate_speedup_pooled_ci"))),
    ("new_tokens_mean (ar)", lambda r: "-" if r.get("new_tokens_mean") is None
     else f"{r['new_tokens_mean']:.1f} ({r['ar_new_tokens_mean']:.1f})"),
    ("exact_match_ar_mean", lambda r: _ci(r.get("exact_match_ar_mean"), None)),
    ("score", lambda r: _ci(r.get("score"), None)),
    ("retention [95% CI]", lambda r: _ci(r.get("retention"), r.get("retention_ci"))),
    ("failed", lambda r: str(r.get("failed", "-"))),
)


def table(rows: list[dict]) -> str:
    """The demo table of summary rows that carry their variant (see `label_rows`), in the given order."""
    from tabulate import tabulate

    return tabulate([[cell(r) for _, cell in COLUMNS] for r in rows], headers=[h for h, _ in COLUMNS],
                    tablefmt="github", disable_numparse=True)


def run_name(task: str, spec: str) -> str:
    """File-safe name of one run: `caption_lvspec_target_prob`, `caption_sd_self`."""
    return f"{task}_" + spec.replace("+", "_").replace(variants.SELF, "_self")


def label_rows(summary: Any, spec_of_file: dict[str, str], extra: dict[str, str]) -> list[dict]:
    """Summary rows in variant order, each with its variant, origin and counterpart variant (from the
    records file it was read from)."""
    order = list(spec_of_file.values())
    rows = []
    for row, group in zip(summary.rows, summary.groups):
        source = next(iter(group.sources.values())).rpartition(":")[0]
        spec = spec_of_file.get(Path(source).name)
        if spec is None:
            continue
        variant, _ = variants.parse(spec)
        rows.append({**row, "variant": spec, "variant_label": variants.label(spec), "origin": variant.origin,
                     "counterpart_variant": variants.counterpart(spec, extra)})
    return sorted(rows, key=lambda r: order.index(r["variant"]))


def main(argv: list[str] | None = None, spawn: Spawn | None = None) -> None:
    """`python -m testbed.demo`; `spawn`: runs each lmms-eval command instead of a fresh subprocess (as in
    `testbed.runs.run_lmms`: the tests' fork server, which runs the jobs side by side too)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=DEFAULT_VARIANTS,
                   help="variants of testbed/variants.py (NAME or NAME@self), e.g. lvspec,lvspec+target_prob")
    p.add_argument("--tasks", default="caption,mcq")
    p.add_argument("--family", choices=sorted(PAIRS), default="qwen", help="which trained testbed pair")
    p.add_argument("--limit", type=int, default=60,
                   help="test clips per task (default 60; 0: all 200)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="lmms-eval runs at a time, each with cores/jobs torch threads (default: 2 on 2+ cores). "
                        "Each run's speedups are measured against ar in its own process, so runs side by side "
                        "do not bias them")
    p.add_argument("--out", default=str(REPORTS / "demo"))
    p.add_argument("--model-args", default="", help="extra model args for every run, e.g. num_draft_tokens=8")
    a = p.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    extra = parse_model_args(a.model_args) if a.model_args else {}
    specs = variants.with_counterparts(a.methods.split(","), extra)  # ar first; counterparts where missing
    added = [x for x in specs if x not in a.methods.split(",")]
    if added:
        print(f"[demo] added {', '.join(added)}: ar, and the lossless counterpart of each loose variant", flush=True)
    t_start = time.time()
    print("[demo] materialising the testbed checkpoints (once, into the cache folder) ...", flush=True)
    from testbed.checkpoints import checkpoint

    model, target_role, draft_role, described = PAIRS[a.family]
    target, draft = str(checkpoint(target_role)), str(checkpoint(draft_role))
    print(f"[demo] target {target}\n[demo] drafter {draft}", flush=True)
    for task in a.tasks.split(","):
        if task not in TASKS:
            raise SystemExit(f"unknown task {task!r}; use {','.join(TASKS)}")
    jobs = [(task, spec) for task in a.tasks.split(",") for spec in specs]
    threads = max(1, (os.cpu_count() or 1) // max(1, a.jobs))

    def one(job: tuple[str, str]) -> Path:
        task, spec = job
        variant, self_draft = variants.parse(spec)
        args = ",".join(x for x in (variant.args_text, a.model_args) if x)
        return run_lmms(variant.method, target, "self" if self_draft else draft, task=TASKS[task], task_dir=TASK_DIR,
                        out=out, name=run_name(task, spec), extra_args=args, limit=a.limit,
                        progress_total=a.limit or count_lines(TASK_DIR / f"{task}.jsonl"), model=model,
                        threads=threads if a.jobs > 1 else None, spawn=spawn)

    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:  # each job is one lmms-eval process
        done = list(pool.map(one, jobs))
    runs: dict[str, list[Path]] = {}
    spec_of_file: dict[str, dict[str, str]] = {}
    for (task, spec), stats in zip(jobs, done):
        runs.setdefault(task, []).extend([stats, out / "lmms" / run_name(task, spec)])
        spec_of_file.setdefault(task, {})[stats.name] = spec

    from lvspec_eval.report.inputs import load_inputs
    from lvspec_eval.report.pairing import build_groups
    from lvspec_eval.report.summary import summarize

    sections, tables = [], {}
    for task, paths in runs.items():
        summary = summarize(build_groups(load_inputs(paths)), resamples=1000, seed=0)
        rows = label_rows(summary, spec_of_file[task], extra)
        tables[TASKS[task]] = rows
        text = table(rows)
        metric = rows[0].get("metric") if rows else "-"
        sections.append(f"### {TASKS[task]} (test clips; score: {metric})\n\n{text}\n")
        print(f"\n{TASKS[task]} (test clips; score = {metric})\n{text}", flush=True)
    minutes = (time.time() - t_start) / 60
    note = (f"Trained tiny testbed pair ({described}; --model {model}), float32, CPU, "
            f"{os.cpu_count()} cores, {a.jobs} run(s) at a time; {minutes:.1f} min in all. ar decoded side by side in the same process "
            f"(paired_baseline=true). Test clips; settings chosen on validation clips (docs/testbed.md). "
            f"tau_ratio: tau over the lossless counterpart's (same drafter input), paired by doc. Intervals: "
            f"bootstrap 95% over clips (1000 resamples, seed 0). Definitions: docs/records.md (run-level statistics).")
    cmd = "python -m testbed.demo " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "summary.md").write_text(f"# make demo\n\nCommand: `{cmd.strip()}`\n\n{note}\n\n" + "\n".join(sections))
    meta = {"command": cmd.strip(), "family": a.family, "model": model, "pair": described, "split": "test",
            "limit": a.limit, "variants": specs, "minutes": round(minutes, 1), "cores": os.cpu_count(),
            "dtype": "float32", "note": note}
    (out / "summary.json").write_text(json.dumps({"meta": meta, "tasks": tables}, indent=1, default=str) + "\n")
    print(f"\n{note}\nFiles: {out} (summary.md, summary.json, records/, lmms/, logs/)", flush=True)


if __name__ == "__main__":
    main()
