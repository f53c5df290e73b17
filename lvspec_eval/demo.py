"""`make demo`: every method through the real lmms-eval CLI on the embedded offline default.

Until the trained testbed lands (issue 3), the embedded default is the tiny task
`tasks/lvspec_tiny` with tiny RANDOM-weight Qwen2.5-VL models (target seed 0, drafter seed 1):
it exercises the whole pipeline (CLI -> backend -> engine -> records -> table) in about two
minutes, but its acceptance and speedup numbers say nothing about LVSpec itself.

Usage: python -m lvspec_eval.demo [--methods ar,sd,lvspec,fly,random] [--out reports/demo]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lvspec_eval.metrics.records import read_records

REPO = Path(__file__).resolve().parents[1]
TASK = "lvspec_tiny_caption"
VIDEO_ARGS = "max_num_frames=8,min_pixels=3136,max_pixels=12544"


def cache_root() -> Path:
    return Path(os.environ.get("LVSPEC_CACHE", Path.home() / ".cache" / "lvspec_eval"))


def prepare_task(out: Path) -> Path:
    """A copy of tasks/lvspec_tiny under `out`/task with its clips."""
    from lvspec_eval.testing.tiny import ensure_clips

    task_dir = out / "task"
    if not (task_dir / "lvspec_tiny.yaml").exists():
        shutil.copytree(REPO / "tasks" / "lvspec_tiny", task_dir, ignore=shutil.ignore_patterns("videos", "__pycache__"))
    ensure_clips(task_dir)
    return task_dir


def prepare(out: Path) -> tuple[str, str, Path]:
    from lvspec_eval.testing.tiny import build_tiny_qwen2_5_vl

    target = build_tiny_qwen2_5_vl(cache_root() / "demo_target", seed=0)
    draft = build_tiny_qwen2_5_vl(cache_root() / "demo_draft", seed=1)
    return str(target), str(draft), prepare_task(out)


def run_method(method: str, target: str, draft: str, task_dir: Path, out: Path, *, name: str = "",
               extra_args: str = "", cwd: Path | None = None) -> Path:
    """One lmms-eval CLI run of `method`; records in out/records/<name>.jsonl, lmms-eval outputs in
    out/lmms/<name>, log in out/logs/<name>.log (name defaults to the method). `extra_args` are
    appended to --model_args; `cwd` is where the CLI runs (relative model paths resolve there)."""
    name = name or method
    stats = out / "records" / f"{name}.jsonl"
    stats.unlink(missing_ok=True)
    model_args = (f"pretrained={target},draft_pretrained={draft},method={method},dtype=float32,device_map=cpu,"
                  f"{VIDEO_ARGS},paired_baseline={'false' if method == 'ar' else 'true'},stats_path={stats}"
                  + (f",{extra_args}" if extra_args else ""))
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "lvspec_qwen", "--model_args", model_args,
           "--device", "cpu", "--include_path", str(task_dir), "--tasks", TASK, "--batch_size", "1",
           "--output_path", str(out / "lmms" / name), "--log_samples"]
    log = out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd,
                              env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"))
    if proc.returncode != 0 or not stats.exists():
        raise SystemExit(f"lmms-eval failed for method={method} ({name}); see {log}")
    return stats


def row(method: str, records: list[dict]) -> list:
    ok = [r for r in records if not r.get("error")]
    med = lambda key: statistics.median(r[key] for r in ok) if ok and all(r.get(key) is not None for r in ok) else None
    if method == "ar":
        return [method, len(records), len(records) - len(ok), med("tau"), None, 1.0, 1.0]
    acc = sum(r["accepted_exact"] + r["accepted_loose"] + r["accepted_shift"] for r in ok)
    prop = sum(r["proposed"] for r in ok)
    speed = sum(r["ar_decode_s"] for r in ok) / sum(r["decode_s"] for r in ok) if ok else None
    exact = statistics.fmean(float(r["exact_match_ar"]) for r in ok) if ok else None
    return [method, len(records), len(records) - len(ok), med("tau"), acc / prop if prop else None, speed, exact]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="ar,sd,lvspec,fly,random")
    p.add_argument("--out", default=str(REPO / "reports" / "demo"))
    args = p.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print("[demo] building tiny random Qwen2.5-VL target/drafter and clips (cached after the first run) ...", flush=True)
    target, draft, task_dir = prepare(out)
    rows = []
    for method in args.methods.split(","):
        t0 = time.time()
        print(f"[demo] {method}: lmms-eval --model lvspec_qwen --tasks {TASK} ...", end=" ", flush=True)
        stats = run_method(method, target, draft, task_dir, out)
        rows.append(row(method, read_records(stats)))
        print(f"done in {time.time() - t0:.0f} s -> {stats}", flush=True)
    from tabulate import tabulate

    headers = ["method", "samples", "failed", "tau (median)", "acceptance rate", "decode speedup vs ar",
               "exact match with ar"]
    table = tabulate(rows, headers=headers, tablefmt="github", floatfmt=".3f", missingval="-")
    print("\n" + table)
    note = ("Tiny RANDOM-weight models (pipeline check, not a measurement of LVSpec): "
            "speedup = summed ar decode time / summed method decode time, both decoded in the same process "
            "(paired_baseline=true).")
    (out / "summary.md").write_text(f"# make demo\n\n{note}\n\n{table}\n")
    print(f"\n{note}\nFiles: {out}")


if __name__ == "__main__":
    main()
