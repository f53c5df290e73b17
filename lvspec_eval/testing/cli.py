"""Running the real `lmms-eval` CLI on tiny tasks in tests, and reading back what it wrote.

lmms-eval's CLI exits 0 even when the evaluation fails, so tests check the files it writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

REPO = Path(__file__).resolve().parents[2]
TINY_TASK_DIR = REPO / "tasks" / "lvspec_tiny"
TINY_TASK = "lvspec_tiny_caption"
#: 8 frames at 56x56..112x112: 4 temporal slices x 16 merged tokens per clip
PIXELS = "max_num_frames=8,min_pixels=3136,max_pixels=12544"
#: Record fields that measure time (they differ between otherwise identical runs)
TIMING_FIELDS = ("prefill_s", "decode_s", "total_s", "ar_prefill_s", "ar_decode_s", "ar_total_s",
                 "speedup_decode", "speedup_e2e")


def cli_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **extra)


def cli_command(model: str, model_args: str, task_dir: Path, out: Path, tasks: str = TINY_TASK,
                extra: Iterable[str] = (), launcher: Optional[list[str]] = None) -> list[str]:
    head = launcher if launcher is not None else [sys.executable, "-m", "lmms_eval"]
    return [*head, "--model", model, "--model_args", model_args, "--device", "cpu",
            "--include_path", str(task_dir), "--tasks", tasks, "--batch_size", "1", "--output_path", str(out),
            "--log_samples", *extra]


def run_cli(model: str, model_args: str, task_dir: Path, out: Path, extra: Iterable[str] = (), tasks: str = TINY_TASK,
            launcher: Optional[list[str]] = None, timeout: int = 900) -> subprocess.CompletedProcess:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = cli_command(model, model_args, task_dir, out, tasks, extra, launcher)
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=out.parent, timeout=timeout)


def outputs(out: Path, task: str = TINY_TASK) -> tuple[dict, list[dict]]:
    """The results json and the samples (sorted by doc_id) of the run's `task`."""
    results = sorted(out.rglob("*_results.json"))
    samples = sorted(out.rglob(f"*_samples_{task}.jsonl"))
    assert results and samples, f"no results/samples of {task} under {out}"
    with open(samples[-1]) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return json.loads(results[-1].read_text()), sorted(rows, key=lambda r: r["doc_id"])


def response(sample: dict) -> str:
    # lmms-eval drops `resps` when it equals `filtered_resps`
    resp = sample.get("resps", sample["filtered_resps"])
    while isinstance(resp, list):
        resp = resp[0]
    return resp


def copy_tiny_task(dst: Path) -> Path:
    """A copy of tasks/lvspec_tiny with its clips made (the copy can be edited)."""
    from lvspec_eval.testing.tiny import ensure_clips

    shutil.copytree(TINY_TASK_DIR, dst, ignore=shutil.ignore_patterns("videos", "__pycache__"))
    ensure_clips(dst)
    return dst


def task_variant(dst: Path, name: str, docs: list[dict[str, Any]], videos: Path,
                 generation_kwargs: Optional[dict] = None) -> Path:
    """A task folder like tasks/lvspec_tiny named `name`, with `docs` (each: id, video, question,
    answer; doc_id is their order) and `generation_kwargs` replacing the tiny task's. The files
    of the folder `videos` are copied to <dst>/videos/, where the docs' `video` names point."""
    dst.mkdir(parents=True)
    shutil.copy(TINY_TASK_DIR / "utils.py", dst / "utils.py")
    yaml = (TINY_TASK_DIR / "lvspec_tiny.yaml").read_text()
    yaml = yaml.replace(f"task: {TINY_TASK}", f"task: {name}")
    if generation_kwargs is not None:  # JSON is YAML: replace the generation_kwargs block
        block = f"generation_kwargs: {json.dumps(generation_kwargs, ensure_ascii=False)}\n"
        yaml = re.sub(r"(?ms)^generation_kwargs:.*?(?=^\S)", lambda _: block, yaml)
    (dst / f"{name}.yaml").write_text(yaml)
    (dst / "test.jsonl").write_text("".join(json.dumps({"doc_id": i, **d}) + "\n" for i, d in enumerate(docs)))
    shutil.copytree(videos, dst / "videos")
    return dst


def without(record: dict, fields: Iterable[str] = TIMING_FIELDS) -> dict:
    drop = set(fields)
    return {k: v for k, v in record.items() if k not in drop}
