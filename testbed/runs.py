"""Run the real lmms-eval CLI with an lvspec backend as a subprocess (used by `make demo` and the
regression baseline): one method on one task, records to a known file, a log, optional progress."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from testbed.paths import VIDEO_MODEL_ARGS

#: Video settings of the offline tasks: 8 frames of 112x112 -> 64 video tokens.


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def run_lmms(method: str, target: str, draft: str, *, task: str, task_dir: Path, out: Path, name: str = "",
             extra_args: str = "", cwd: Path | None = None, limit: int | None = None,
             progress_total: int | None = None, model: str = "lvspec_qwen", dtype: str = "float32") -> Path:
    """One lmms-eval CLI run of ``method``: records in ``out/records/<name>.jsonl``, lmms-eval outputs in
    ``out/lmms/<name>``, log in ``out/logs/<name>.log`` (``name`` defaults to the method). ``extra_args``
    are appended to --model_args; ``cwd`` is where the CLI runs (relative model paths resolve there); ``dtype``
    is the model args' dtype (float32: the testbed's exact setting; the noise floor also runs bfloat16).
    With ``progress_total``, prints a progress line while it runs. Raises SystemExit when the run
    fails or writes no records (the CLI itself exits 0 even when an evaluation fails)."""
    name = name or method
    stats = out / "records" / f"{name}.jsonl"
    stats.unlink(missing_ok=True)
    # lmms-eval nests its files under the model path: a previous run with another checkpoint would
    # survive beside this one and be read back as if it were this run's
    shutil.rmtree(out / "lmms" / name, ignore_errors=True)
    model_args = (f"pretrained={target},draft_pretrained={draft},method={method},dtype={dtype},device_map=cpu,"
                  f"{VIDEO_MODEL_ARGS},paired_baseline={'false' if method == 'ar' else 'true'},stats_path={stats}"
                  + (f",{extra_args}" if extra_args else ""))
    cmd = [sys.executable, "-m", "lmms_eval", "--model", model, "--model_args", model_args, "--device", "cpu",
           "--include_path", str(task_dir), "--tasks", task, "--batch_size", "1",
           "--output_path", str(out / "lmms" / name), "--log_samples"]
    if limit:
        cmd += ["--limit", str(limit)]
    log = out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd,
                                env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"))
        last = 0
        while proc.poll() is None:
            time.sleep(1)
            done = count_lines(stats)
            if progress_total and done - last >= max(1, progress_total // 4):
                print(f"[demo] {name:16s} {done:4d}/{progress_total} samples, {time.time() - t0:4.0f} s", flush=True)
                last = done
    if progress_total:
        print(f"[demo] {name:16s} {count_lines(stats):4d}/{progress_total} samples in {time.time() - t0:4.0f} s",
              flush=True)
    if proc.returncode != 0 or not stats.exists():
        raise SystemExit(f"lmms-eval failed for method={method} ({name}, exit {proc.returncode}); see {log}")
    return stats
