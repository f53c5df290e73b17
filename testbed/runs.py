"""Run the real lmms-eval CLI with an lvspec backend as a subprocess (used by `make demo` and the
regression baseline): one method on one task, records to a known file, a log, optional progress.

:func:`lmms_command` is the one builder of an lmms-eval command line (the testbed's runs, the tests'
CLI helpers and ``benchmarks/reproduce_paper.py`` call it); :func:`offline_env` its environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from testbed.paths import VIDEO_MODEL_ARGS

#: Runs an lmms-eval command line with stdout and stderr to a log: (cmd, log, cwd, env) -> exit status.
Spawn = Callable[[list[str], Path, Optional[Path], dict[str, str]], int]


def lmms_command(model: str, model_args: str, tasks: str, output_path: Path, *, include_path: Optional[Path] = None,
                 device: Optional[str] = "cpu", gen_kwargs: str = "", extra: Iterable[str] = (),
                 launcher: Optional[Sequence[str]] = None) -> list[str]:
    """The lmms-eval command line of one run at batch size 1 with per-sample logs: ``launcher`` (default:
    this Python's ``-m lmms_eval``; e.g. an ``accelerate launch`` prefix), ``--model``, ``--model_args``,
    ``--device`` (none when ``device`` is None), ``--include_path`` (a folder of task YAMLs), ``--tasks``
    (comma-separated), ``--output_path``, ``--gen_kwargs`` when given, then ``extra`` (e.g. ``--limit 2``)."""
    cmd = [*(launcher if launcher is not None else (sys.executable, "-m", "lmms_eval")),
           "--model", model, "--model_args", model_args]
    if device is not None:
        cmd += ["--device", device]
    if include_path is not None:
        cmd += ["--include_path", str(include_path)]
    cmd += ["--tasks", tasks, "--batch_size", "1", "--output_path", str(output_path), "--log_samples"]
    if gen_kwargs:
        cmd += ["--gen_kwargs", gen_kwargs]
    return [*cmd, *extra]


def offline_env(**extra: str) -> dict[str, str]:
    """This process's environment with the hub and datasets offline (and ``extra`` variables)."""
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **extra)


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def run_lmms(method: str, target: str, draft: str, *, task: str, task_dir: Path, out: Path, name: str = "",
             extra_args: str = "", cwd: Path | None = None, limit: int | None = None,
             progress_total: int | None = None, model: str = "lvspec_qwen", dtype: str = "float32",
             threads: int | None = None, spawn: Spawn | None = None) -> Path:
    """One lmms-eval CLI run of ``method``: records in ``out/records/<name>.jsonl``, lmms-eval outputs in
    ``out/lmms/<name>``, log in ``out/logs/<name>.log`` (``name`` defaults to the method). ``extra_args``
    are appended to --model_args; ``cwd`` is where the CLI runs (relative model paths resolve there); ``dtype``
    is the model args' dtype (float32: the testbed's exact setting; the noise floor also runs bfloat16).
    With ``progress_total``, prints a progress line while it runs; ``threads`` sets the run's torch threads
    (OMP_NUM_THREADS; None: the environment's); ``spawn(cmd, log, cwd, env) -> exit status`` runs the
    command instead of a fresh subprocess (the tests' fork server, testbed.fixtures.cli_zygote; no
    progress lines then). Raises SystemExit when the run
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
    cmd = lmms_command(model, model_args, task, out / "lmms" / name, include_path=task_dir,
                       extra=["--limit", str(limit)] if limit else ())
    log = out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    env = offline_env(**({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    if spawn is not None:
        returncode = spawn(cmd, log, cwd, env)
    else:
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env)
            last = 0
            while proc.poll() is None:
                time.sleep(1)
                done = count_lines(stats)
                if progress_total and done - last >= max(1, progress_total // 4):
                    print(f"[demo] {name:16s} {done:4d}/{progress_total} samples, {time.time() - t0:4.0f} s",
                          flush=True)
                    last = done
        returncode = proc.returncode
    if progress_total:
        print(f"[demo] {name:16s} {count_lines(stats):4d}/{progress_total} samples in {time.time() - t0:4.0f} s",
              flush=True)
    if returncode != 0 or not stats.exists():
        raise SystemExit(f"lmms-eval failed for method={method} ({name}, exit {returncode}); see {log}")
    return stats


def task_docs(target: object, docs_file: str, limit: int = 0) -> list[tuple[dict, dict]]:
    """The first `limit` docs (0: all) of the testbed task file `docs_file` (e.g. "caption.jsonl") with the
    target adapter's model inputs, prepared from lmms-eval chat messages as the backends prepare them."""
    import json

    from lvspec_eval.lmms.inputs import prepare_inputs
    from testbed.paths import TESTBED_TASK_DIR

    docs = [json.loads(line) for line in (TESTBED_TASK_DIR / docs_file).read_text().splitlines()]
    out = []
    for doc in docs[:limit] if limit else docs:
        messages = [{"role": "user", "content": [{"type": "video", "url": str(TESTBED_TASK_DIR / "videos" / doc["video"])},
                                                 {"type": "text", "text": doc["question"]}]}]
        out.append((doc, prepare_inputs(target, messages)))
    return out
