"""The committed regression baseline of `lvspec-report check` (reports/baseline/) and CI's check.

Regenerate it (one command, about 3 minutes on a 2-core CPU; commit the file with the change
that moved it and say why):

    python -m testbed.baseline --out reports/baseline/testbed_cpu.json

Check fresh runs against it (tests/test_report_baseline.py does the same under `make test`, without
the speed check):

    python -m testbed.baseline --check reports/baseline/testbed_cpu.json [--speed]

Both run the real lmms-eval CLI once per entry of RUNS on the first LIMIT clips of the testbed's
caption task (`tasks/lvspec_testbed`) with the trained testbed pair (float32, CPU, default
settings, K = 10). The checkpoints are linked into the run folder as ./testbed/target and
./testbed/drafter and the CLI runs there, so the model names in records (the row keys `check`
matches on) do not depend on where the checkpoints are cached.

Thresholds (docs/report.md says why):
  CHECK_OPTIONS: tau, exact match with ar, retention   deterministic (greedy, float32, seeded `random`): tight
  SPEED_CHECK_OPTIONS: decode speedup                  timing of tiny models on a shared CPU: loose, and
      only with --speed (a quiet machine like the baseline's): under load it fails without a regression
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional

from testbed.paths import BASELINE, REPO, TESTBED_TASK_DIR as TASK_DIR

TASK = "lvspec_testbed_caption"
LIMIT = 8  # clips of the caption task per run
TARGET = "./testbed/target"
DRAFT = "./testbed/drafter"
METRIC = "anchor_f1"

#: (name, method, extra model args, drafter) of each lmms-eval run (default settings, K = 10).
RUNS = (
    ("ar", "ar", "", DRAFT),
    ("sd", "sd", "", DRAFT),  # lossless: exact match with ar must stay 1
    ("lvspec", "lvspec", "", DRAFT),  # loose acceptance with the default anchor finder
    ("random", "random", "", DRAFT),  # seeded coin flips: deterministic per sample
)

#: Options of `lvspec-report check` against the baseline.
CHECK_OPTIONS = (
    "--metric", METRIC,
    "--max-tau-drop", "1%",
    "--max-drop", "exact_match_ar_mean=0",
    "--max-drop", "retention=1%",
)
#: The timing check, added by `--check --speed` (and by the test that tampers with decode times).
SPEED_CHECK_OPTIONS = ("--max-speedup-drop", "50%")


def generate(out: Path, target_ckpt: str, draft_ckpt: str, spawn=None) -> list[Path]:
    """Run every entry of RUNS under `out`; returns the folders to give to lvspec-report (`spawn`: as in
    `testbed.runs.run_lmms`)."""
    from testbed.runs import run_lmms

    out = Path(out).resolve()
    models = out / "testbed"
    models.mkdir(parents=True, exist_ok=True)
    for name, ckpt in ((Path(TARGET).name, target_ckpt), (Path(DRAFT).name, draft_ckpt)):
        link = models / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(ckpt).resolve(), target_is_directory=True)
    for name, method, extra, draft in RUNS:
        print(f"[baseline] {name}: lmms-eval --model lvspec_qwen method={method} {extra}", file=sys.stderr, flush=True)
        run_lmms(method, TARGET, draft, task=TASK, task_dir=TASK_DIR, out=out, name=name, extra_args=extra, cwd=out,
                 limit=LIMIT, spawn=spawn)
    return [out / "records", out / "lmms"]


def testbed_checkpoints() -> tuple[str, str]:
    """The trained testbed target and drafter, materialised once into the cache (as `make demo`)."""
    from testbed.checkpoints import checkpoint

    return str(checkpoint("target")), str(checkpoint("drafter"))


def main(argv: Optional[list[str]] = None) -> int:
    from lvspec_eval.report.cli import main as report

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", metavar="FILE", help="write a new baseline (summary JSON) here")
    mode.add_argument("--check", metavar="FILE", nargs="?", const=str(BASELINE),
                      help=f"check fresh runs against this baseline (default {BASELINE.relative_to(REPO)})")
    p.add_argument("--workdir", metavar="DIR", help="where the runs go (default: a temporary folder)")
    p.add_argument("--speed", action="store_true",
                   help="with --check: also check decode speedups (meaningful alone on the baseline's hardware)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lvspec_baseline_") as tmp:
        runs = [str(r) for r in generate(Path(args.workdir or tmp), *testbed_checkpoints())]
        if args.out:
            return report(["summary", *runs, "--metric", METRIC, "--format", "json", "--output", args.out])
        return report(["check", "--baseline", args.check, *runs, *CHECK_OPTIONS,
                       *(SPEED_CHECK_OPTIONS if args.speed else ())])


if __name__ == "__main__":
    sys.exit(main())
