"""How well the testbed target and drafter see: both models with `ar` on both test tasks, through
the lmms-eval CLI, per-attribute scores from lmms-eval's results files.

    python -m testbed.quality [--family qwen|llava_ov|qwen3_vl] [--limit N] [--out reports/testbed_quality]
                                          [--score-only]   # re-read the last runs, run nothing
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from testbed import grammar as g

from testbed.paths import REPORTS, TESTBED_TASK_DIR as TASK_DIR
CAPTION, MCQ = "lvspec_testbed_caption", "lvspec_testbed_mcq"


def scores(out: Path, task: str) -> dict[str, float]:
    files = list(out.rglob("*_results.json"))
    if not files:
        raise SystemExit(f"no lmms-eval results under {out}; run without --score-only first")
    results = json.loads(max(files, key=lambda f: f.stat().st_mtime).read_text())["results"][task]  # newest run
    return {k.split(",")[0]: v for k, v in results.items() if "," in k and "stderr" not in k
            and isinstance(v, (int, float))}


def main(argv: list[str] | None = None) -> None:
    from tabulate import tabulate

    from testbed.runs import run_lmms
    from testbed.checkpoints import checkpoint
    from testbed.families import PAIRS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--family", choices=sorted(PAIRS), default="qwen", help="which trained testbed pair")
    p.add_argument("--score-only", action="store_true", help="tabulate the newest existing runs, run nothing")
    p.add_argument("--out", type=Path, default=REPORTS / "testbed_quality")
    a = p.parse_args(argv)
    out = a.out.resolve()
    pair = PAIRS[a.family]
    rows = []
    for role in (pair.target, pair.drafter):
        ckpt = str(checkpoint(role))
        row = [role]
        for task in (CAPTION, MCQ):
            name = f"{role}_{task}"
            if not a.score_only:
                run_lmms("ar", ckpt, ckpt, task=task, task_dir=TASK_DIR, out=out, name=name, limit=a.limit,
                         model=pair.model)
            s = scores(out / "lmms" / name, task)
            row += [s["anchor_f1"]] + [s[f"attr_{x}"] for x in g.ATTRIBUTES] if task == CAPTION else [s["accuracy"]]
        rows.append(row)
    headers = ["model", "anchor_f1"] + [f"attr {x}" for x in g.ATTRIBUTES] + ["MCQ accuracy"]
    table = tabulate(rows, headers=headers, tablefmt="github", floatfmt=".3f")
    cmd = "python -m testbed.quality " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / f"quality{'' if a.family == 'qwen' else '_' + a.family}.md").write_text(
        f"Command: `{cmd.strip()}` (method ar, float32, CPU, --model {pair.model})\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    sys.exit(main())
