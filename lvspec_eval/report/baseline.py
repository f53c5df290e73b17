"""The committed regression baseline of `lvspec-report check` (reports/baseline/) and CI's check.

Regenerate it (one command, about 2 minutes on a 2-core CPU; commit the file with the change
that moved it and say why):

    python -m lvspec_eval.report.baseline --out reports/baseline/tiny_cpu.json

Check fresh runs against it (tests/test_report_baseline.py does the same under `make test`):

    python -m lvspec_eval.report.baseline --check reports/baseline/tiny_cpu.json

Both run the real lmms-eval CLI once per entry of RUNS on the tiny task `tasks/lvspec_tiny`
with the tiny RANDOM-weight Qwen2.5-VL models of `lvspec_eval.testing.tiny` (target seed 0,
drafter seed 1, float32, CPU). Until the trained testbed (issue 3) replaces them, the numbers
test the pipeline, not LVSpec. The checkpoints are linked into the run folder as
./tiny/target_seed0 and ./tiny/draft_seed1 and the CLI runs there, so the model names in records
(the row keys `check` matches on) do not depend on where the checkpoints are cached.

Thresholds (CHECK_OPTIONS; docs/report.md says why):
  tau, exact match with ar, retention   deterministic (greedy, float32, seeded `random`): tight
  decode speedup                         timing of ~20M-parameter models on a shared CPU: loose
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "reports" / "baseline" / "tiny_cpu.json"
TARGET = "./tiny/target_seed0"
DRAFT = "./tiny/draft_seed1"
METRIC = "answer_similarity"  # the tiny task's score that is non-zero for random models

#: (name, method, extra model args, drafter) of each lmms-eval run.
RUNS = (
    ("ar", "ar", "", DRAFT),
    ("sd_self", "sd", "num_draft_tokens=4", "self"),  # identical drafter: every draft token accepted
    ("lvspec", "lvspec", "num_draft_tokens=4", DRAFT),  # loose acceptance of a random drafter
    ("random", "random", "num_draft_tokens=4", DRAFT),  # seeded coin flips: deterministic per sample
)

#: Options of `lvspec-report check` against the baseline.
CHECK_OPTIONS = (
    "--metric", METRIC,
    "--max-tau-drop", "1%",
    "--max-drop", "exact_match_ar=0",
    "--max-drop", "retention=1%",
    "--max-speedup-drop", "50%",
)


def prepare_task(out: Path) -> Path:
    """A copy of tasks/lvspec_tiny under `out`/task with its clips."""
    from lvspec_eval.testing.tiny import ensure_clips

    task_dir = out / "task"
    if not (task_dir / "lvspec_tiny.yaml").exists():
        shutil.copytree(REPO / "tasks" / "lvspec_tiny", task_dir, ignore=shutil.ignore_patterns("videos", "__pycache__"))
    ensure_clips(task_dir)
    return task_dir


def generate(out: Path, target_ckpt: str, draft_ckpt: str) -> list[Path]:
    """Run every entry of RUNS under `out`; returns the folders to give to lvspec-report."""
    from lvspec_eval.runs import run_lmms

    out = Path(out).resolve()
    models = out / "tiny"
    models.mkdir(parents=True, exist_ok=True)
    for name, ckpt in ((Path(TARGET).name, target_ckpt), (Path(DRAFT).name, draft_ckpt)):
        link = models / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(ckpt).resolve(), target_is_directory=True)
    task_dir = prepare_task(out)
    for name, method, extra, draft in RUNS:
        print(f"[baseline] {name}: lmms-eval --model lvspec_qwen method={method} {extra}", file=sys.stderr, flush=True)
        run_lmms(method, TARGET, draft, task="lvspec_tiny_caption", task_dir=task_dir, out=out, name=name,
                 extra_args=extra, cwd=out)
    return [out / "records", out / "lmms"]


def tiny_checkpoints() -> tuple[str, str]:
    """The tiny target (seed 0) and drafter (seed 1), built once into the cache (as `make demo`)."""
    from lvspec_eval.testing.tiny import build_tiny_qwen2_5_vl, default_cache_root

    return (str(build_tiny_qwen2_5_vl(default_cache_root() / "demo_target", seed=0)),
            str(build_tiny_qwen2_5_vl(default_cache_root() / "demo_draft", seed=1)))


def main(argv: Optional[list[str]] = None) -> int:
    from lvspec_eval.report.cli import main as report

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", metavar="FILE", help="write a new baseline (summary JSON) here")
    mode.add_argument("--check", metavar="FILE", nargs="?", const=str(BASELINE),
                      help=f"check fresh runs against this baseline (default {BASELINE.relative_to(REPO)})")
    p.add_argument("--workdir", metavar="DIR", help="where the runs go (default: a temporary folder)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lvspec_baseline_") as tmp:
        runs = [str(r) for r in generate(Path(args.workdir or tmp), *tiny_checkpoints())]
        if args.out:
            return report(["summary", *runs, "--metric", METRIC, "--format", "json", "--output", args.out])
        return report(["check", "--baseline", args.check, *runs, *CHECK_OPTIONS])


if __name__ == "__main__":
    sys.exit(main())
