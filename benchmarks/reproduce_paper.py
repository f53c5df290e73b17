"""One command to reproduce the paper's evaluation on real hardware (GPUs and the checkpoints).

The paper's protocol (method.md section 6): Qwen2.5-VL-32B-Instruct drafted by Qwen2.5-VL-7B-Instruct
and LLaVA-OneVision-72B drafted by LLaVA-OneVision-7B, 64 frames, greedy, batch 1, on lmms-eval's
`video_dc499` (VideoDetailCaption, `--gen_kwargs max_new_tokens=256`, GPT judge) and `videomme`.
Methods: ar, sd, specvlm, lvspec at lambda 0.7 (the default) and 0.9 (shift tolerance off, as the
paper's "no PST" row), random at 0.75. Every (family, task, method) is one lmms-eval CLI run with
per-sample records (`stats_path`); then `lvspec-report summary` and `lvspec-report html` read them
all, and a table laid out like the paper's (setting | tau_excl | speedup | retention) is written
beside the paper's numbers.

Placement over the GPUs present: a pair that fits one GPU (bf16 weights + KV at 64 frames, README
"Memory in bf16") runs data parallel, one process per GPU (`accelerate launch --num_processes N -m
lmms_eval ...`); a pair that does not (the 72B target on 80 GB GPUs) runs in one process with the
target spread over every GPU (`device_map=balanced`) and the drafter on cuda:0 (README "Model
parallel").

Usage:
  python -m benchmarks.reproduce_paper [--out reports/paper_repro] [--families qwen,llava_ov]
        [--tasks video_dc499,videomme] [--methods ar,sd,specvlm,lvspec_0.7,lvspec_0.9,random_0.75] [--limit N]
  python -m benchmarks.reproduce_paper --print-plan      # the commands, nothing run
  python -m benchmarks.reproduce_paper --dry-run --out /tmp/repro   # tiny checkpoints, two docs, local tasks, CPU
Needs: the checkpoints (hub names or local folders via --qwen-target etc.), lmms-eval's task data
(`videomme` reads $HF_HOME/videomme/data/<id>.mp4), and for `video_dc499` the GPT judge settings
lmms-eval reads (OPENAI_API_KEY / OPENAI_API_URL, MODEL_VERSION). A finished run is resumed from its
records (rerun the same command after an interruption).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from testbed.paths import REPO, TESTBED_TASK_DIR, VIDEO_ARGS, VIDEO_MODEL_ARGS
from testbed.runs import Spawn, lmms_command


@dataclass(frozen=True)
class Family:
    key: str
    label: str  # as the paper's table names it
    backend: str  # lmms-eval model name (the lvspec backend of the family)
    target: str
    draft: str
    need_gib: float  # bf16 weights of both models + KV at 64 frames (README "Memory in bf16"), per pair
    model_args: str  # video settings of the protocol


@dataclass(frozen=True)
class Task:
    key: str  # the paper's task name
    lmms_task: str  # what lmms-eval runs
    gen_kwargs: str = ""
    include_path: Optional[Path] = None


@dataclass(frozen=True)
class MethodRun:
    key: str
    label: str
    model_args: str


FAMILIES = {
    "qwen": Family("qwen", "Qwen2.5-VL-32B", "lvspec_qwen", "Qwen/Qwen2.5-VL-32B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct",
                   89.0, "max_num_frames=64"),
    "llava_ov": Family("llava_ov", "LLaVA-OneVision-72B", "lvspec_llava_ov", "llava-hf/llava-onevision-qwen2-72b-ov-hf",
                       "llava-hf/llava-onevision-qwen2-7b-ov-hf", 165.0, "max_num_frames=64"),
}
TASKS = {
    "video_dc499": Task("video_dc499", "video_dc499", "max_new_tokens=256"),
    "videomme": Task("videomme", "videomme"),
}
METHOD_RUNS = {m.key: m for m in (
    MethodRun("ar", "ar", "method=ar"),
    MethodRun("sd", "standard SD (strict)", "method=sd"),
    MethodRun("specvlm", "SpecVLM (pruned drafter, strict)", "method=specvlm"),
    MethodRun("lvspec_0.7", "LVSpec", "method=lvspec,relax_ratio=0.7"),
    MethodRun("lvspec_0.9", "LVSpec λ = 0.9 (no PST)", "method=lvspec,relax_ratio=0.9,shift_window=0"),
    MethodRun("random_0.75", "random relaxation 75%", "method=random,random_accept=0.75"),
)}
#: method.md section 6: (setting, family, method run, tau_excl, speedup, retention)
PAPER_ROWS = (
    ("Qwen2.5-VL-32B, standard SD (strict)", "qwen", "sd", "3.28", "1.41x", "100%"),
    ("Qwen2.5-VL-32B, LVSpec", "qwen", "lvspec_0.7", "7.76", "2.70x", "> 99.8%"),
    ("LLaVA-OneVision-72B, LVSpec", "llava_ov", "lvspec_0.7", "7.34", "2.94x", "> 99.8%"),
    ("LVSpec λ = 0.9 (no PST)", "qwen", "lvspec_0.9", "8.97", "3.03x", "92.8%"),
    ("LVSpec N = 100 (no PST)", "qwen", None, "7.47", "2.65x", "93.4%"),
    ("random relaxation 75% (32B/7B)", "qwen", "random_0.75", "7.42", "2.61x", "93.6%"),
)


@dataclass
class Run:
    family: Family
    task: Task
    method: MethodRun
    name: str
    model_args: str
    launcher: list[str]
    extra: list[str] = field(default_factory=list)

    def command(self, out: Path, device: str) -> list[str]:
        return lmms_command(self.family.backend, self.model_args, self.task.lmms_task, out / "lmms" / self.name,
                            include_path=self.task.include_path, device="cpu" if device == "cpu" else None,
                            gen_kwargs=self.task.gen_kwargs, extra=self.extra, launcher=self.launcher)


def gpus() -> tuple[int, float]:
    """(number of visible GPUs, memory of the smallest in GiB)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return 0, 0.0
    if not torch.cuda.is_available():
        return 0, 0.0
    n = torch.cuda.device_count()
    return n, min(torch.cuda.get_device_properties(i).total_memory for i in range(n)) / 2**30


def detected_gpus(a: argparse.Namespace) -> tuple[int, float]:
    """The GPUs to plan for: --gpus / --gpu-gib when given (e.g. to print another machine's plan), else those visible."""
    n, gib = gpus()
    return (a.gpus if a.gpus is not None else n), (a.gpu_gib if a.gpu_gib is not None else gib)


def placement(family: Family, n_gpus: int, gib: float) -> tuple[list[str], str, str]:
    """(launcher, extra model args, description): data parallel when the pair fits one GPU, else one
    process with the target over every GPU."""
    lmms = [sys.executable, "-m", "lmms_eval"]
    if n_gpus == 0:
        return lmms, "device_map=cpu", "CPU, one process"
    if family.need_gib * 1.1 <= gib:
        if n_gpus == 1:
            return lmms, "", "one GPU"
        return ([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n_gpus), "-m", "lmms_eval"],
                "", f"data parallel over {n_gpus} GPUs (accelerate launch, one pair per GPU)")
    if family.need_gib * 1.1 > gib * n_gpus:
        raise SystemExit(f"{family.label} with its drafter needs about {family.need_gib:.0f} GiB in bf16; the {n_gpus} "
                         f"GPU(s) here hold {gib * n_gpus:.0f} GiB. Use more GPUs (README 'Model parallel').")
    return lmms, "device_map=balanced,draft_device_map=cuda:0", f"model parallel: target over {n_gpus} GPUs, drafter on cuda:0"


def plan_runs(a: argparse.Namespace, out: Path) -> tuple[list[Run], dict[str, str]]:
    families = [FAMILIES[f] for f in a.families.split(",")]
    tasks = [TASKS[t] for t in a.tasks.split(",")]
    methods = [METHOD_RUNS[m] for m in a.methods.split(",")]
    if "ar" not in [m.key for m in methods]:
        methods.insert(0, METHOD_RUNS["ar"])  # speedup and retention pair every method with ar
    overrides = {"qwen": (a.qwen_target, a.qwen_draft), "llava_ov": (a.llava_target, a.llava_draft)}
    n_gpus, gib = (0, 0.0) if a.dry_run else detected_gpus(a)
    common = "dtype=bfloat16"
    if a.dry_run:
        families, tasks, common = dry_run_setup(families, tasks, out)
    runs, where = [], {}
    for fam in families:
        target, draft = overrides[fam.key] if not a.dry_run else (fam.target, fam.draft)
        fam = replace(fam, target=target or fam.target, draft=draft or fam.draft)
        launcher, place, where[fam.key] = placement(fam, n_gpus, gib)
        for task in tasks:
            for m in methods:
                name = f"{fam.key}_{task.key}_{m.key}"
                args = ",".join(x for x in (f"pretrained={fam.target},draft_pretrained={fam.draft}", m.model_args,
                                            fam.model_args, common, place, f"stats_path={out / 'records' / f'{name}.jsonl'}")
                                if x)
                extra = ["--limit", str(a.limit)] if a.limit else []
                runs.append(Run(fam, task, m, name, args, launcher, extra))
    return runs, where


def dry_run_setup(families: list[Family], tasks: list[Task], out: Path) -> tuple[list[Family], list[Task], str]:
    """Tiny random checkpoints (testbed/fixtures), the offline testbed tasks standing in for the hub
    tasks (caption for video_dc499, multiple choice for videomme), their 8-frame video settings, CPU."""
    from testbed.fixtures.tiny import build_tiny_qwen2_5_vl
    from testbed.fixtures.tiny_llava import build_tiny_llava_onevision
    from testbed.fixtures.tokenizer import PADDED_EMBEDDING_ROWS

    ckpt = out / "checkpoints"
    builders = {  # the families asked for only
        "qwen": lambda: (build_tiny_qwen2_5_vl(ckpt / "qwen_target", seed=0),
                         build_tiny_qwen2_5_vl(ckpt / "qwen_draft", seed=1)),
        "llava_ov": lambda: (build_tiny_llava_onevision(ckpt / "llava_target", seed=0),
                             build_tiny_llava_onevision(ckpt / "llava_draft", seed=1, vocab_size=PADDED_EMBEDDING_ROWS)),
    }
    tiny = {f.key: builders[f.key]() for f in families}
    families = [replace(f, target=str(tiny[f.key][0]), draft=str(tiny[f.key][1]), need_gib=0.0,
                        model_args=VIDEO_MODEL_ARGS if f.key == "qwen" else f"max_num_frames={VIDEO_ARGS['max_num_frames']}")
                for f in families]
    stand_in = {"video_dc499": Task("video_dc499", "lvspec_testbed_caption", "max_new_tokens=24", TESTBED_TASK_DIR),
                "videomme": Task("videomme", "lvspec_testbed_mcq", "", TESTBED_TASK_DIR)}
    return families, [stand_in[t.key] for t in tasks], "dtype=float32"


def run_all(runs: list[Run], out: Path, device: str, spawn: Optional[Spawn] = None) -> list[dict[str, Any]]:
    """Each run in turn (lmms-eval's CLI exits 0 even when an evaluation fails: a run counts as done
    only when its results file and its records exist). `spawn(cmd, log, cwd, env) -> exit status` runs a
    plain `python -m lmms_eval` command instead of a fresh subprocess (`testbed.runs.Spawn`: the tests'
    fork server); launcher commands always start their own processes."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    status = []
    (out / "logs").mkdir(parents=True, exist_ok=True)
    for i, run in enumerate(runs, 1):
        cmd = run.command(out, device)
        log_path = out / "logs" / f"{run.name}.log"
        print(f"[repro] {i}/{len(runs)} {run.name}: {shlex.join(cmd)}", flush=True)
        t0 = time.time()
        if spawn is not None and cmd[:3] == [sys.executable, "-m", "lmms_eval"]:
            returncode = spawn(cmd, log_path, REPO, env)
        else:
            with open(log_path, "w") as fh:
                returncode = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
        results = sorted((out / "lmms" / run.name).rglob("*_results.json"))
        records = sorted((out / "records").glob(f"{run.name}*.jsonl"))
        ok = returncode == 0 and bool(results) and bool(records)
        status.append({"run": run.name, "ok": ok, "exit": returncode, "seconds": round(time.time() - t0, 1),
                       "results": [str(p) for p in results], "records": [str(p) for p in records], "log": str(log_path)})
        print(f"[repro] {run.name}: {'done' if ok else 'FAILED'} in {time.time() - t0:.0f} s (log {log_path})", flush=True)
    return status


def report(out: Path, families: dict[str, Family], tasks: dict[str, str]) -> Path:
    """`lvspec-report summary` (JSON) and `lvspec-report html` over every run, then the paper-layout table."""
    inputs = [str(out / "records"), str(out / "lmms")]
    cli = [sys.executable, "-m", "lvspec_eval.report.cli"]
    for sub in (["summary", *inputs, "--format", "json", "--output", str(out / "summary.json")],
                ["html", *inputs, "-o", str(out / "report.html"), "--title", "LVSpec paper reproduction"]):
        print(f"[repro] lvspec-report {shlex.join(sub)}", flush=True)
        proc = subprocess.run([*cli, *sub], capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            raise SystemExit(f"lvspec-report {sub[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = json.loads((out / "summary.json").read_text())["rows"]
    text = paper_table(rows, families, tasks)
    path = out / "paper_table.md"
    path.write_text(text)
    print(text, flush=True)
    return path


def find_row(rows: list[dict[str, Any]], task: str, target: str, run: MethodRun) -> Optional[dict[str, Any]]:
    wanted = dict(kv.split("=", 1) for kv in run.model_args.split(","))
    method = wanted.pop("method")
    for row in rows:
        if row["task"] != task or row["target"] != target or row["method"] != method:
            continue
        if all(str(row["settings"].get(k)) == str(v) or _same_number(row["settings"].get(k), v) for k, v in wanted.items()):
            return row
    return None


def _same_number(a: Any, b: str) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _fmt(v: Optional[float], kind: str) -> str:
    if v is None:
        return "-"
    return {"tau": f"{v:.2f}", "x": f"{v:.2f}x", "pct": f"{100 * v:.1f}%"}[kind]


def paper_table(rows: list[dict[str, Any]], families: dict[str, Family], tasks: dict[str, str]) -> str:
    """One table per task (`tasks`: the paper's task name -> the lmms-eval task that ran) laid out like
    the paper's (method.md section 6), ours beside the paper's, then every other run of the task."""
    lines = ["# LVSpec paper reproduction: the paper's table beside this run", "",
             "Ours: tau_excl = accepted draft tokens per round (mean over samples); speedup = summed ar decode time / "
             "summed method decode time over the same docs (prefill excluded, the ar run of the same task and target); "
             "retention = task score / ar task score. Paper: method.md section 6 (the paper does not split its table "
             "by benchmark; the same figures stand beside each task).", ""]
    for task_key, task_name in tasks.items():
        task_rows = [r for r in rows if r["task"] == task_name]
        lines += [f"## {task_key} (lmms-eval task `{task_name}`)", "",
                  "| setting | tau_excl (ours) | tau_excl (paper) | speedup (ours) | speedup (paper) | retention (ours) "
                  "| retention (paper) |", "|---|---|---|---|---|---|---|"]
        used = set()
        for setting, fam_key, run_key, tau, speedup, retention in PAPER_ROWS:
            fam = families.get(fam_key)
            row = find_row(task_rows, task_name, fam.target, METHOD_RUNS[run_key]) if fam and run_key else None
            if row is not None:
                used.add(id(row))
            ours = (_fmt(row.get("tau_excl_mean"), "tau"), _fmt(row.get("speedup_decode_pooled"), "x"),
                    _fmt(row.get("retention"), "pct")) if row else ("not run",) * 3
            lines.append(f"| {setting} | {ours[0]} | {tau} | {ours[1]} | {speedup} | {ours[2]} | {retention} |")
        others = [r for r in task_rows if id(r) not in used]
        if others:
            lines += ["", "Other runs of this task:", "", "| family | method | settings | tau_excl | speedup | retention |",
                      "|---|---|---|---|---|---|"]
            labels = {f.target: f.label for f in families.values()}
            for r in others:
                lines.append(f"| {labels.get(r['target'], r['target'])} | {r['method']} | {r['settings_label']} | "
                             f"{_fmt(r.get('tau_excl_mean'), 'tau')} | {_fmt(r.get('speedup_decode_pooled'), 'x')} | "
                             f"{_fmt(r.get('retention'), 'pct')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None, spawn: Optional[Spawn] = None) -> None:
    """The command line (`spawn`: as in `run_all`, for the tests)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "reports" / "paper_repro"))
    p.add_argument("--families", default="qwen,llava_ov")
    p.add_argument("--tasks", default="video_dc499,videomme")
    p.add_argument("--methods", default=",".join(METHOD_RUNS))
    p.add_argument("--limit", type=int, default=None, help="docs per task (default: all; --dry-run: 2)")
    p.add_argument("--qwen-target", help="local folder of Qwen2.5-VL-32B-Instruct (default: the hub name)")
    p.add_argument("--qwen-draft", help="local folder of Qwen2.5-VL-7B-Instruct")
    p.add_argument("--llava-target", help="local folder of llava-onevision-qwen2-72b-ov-hf")
    p.add_argument("--llava-draft", help="local folder of llava-onevision-qwen2-7b-ov-hf")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny random checkpoints, two docs, the offline testbed tasks for video_dc499/videomme, CPU")
    p.add_argument("--print-plan", action="store_true", help="print the commands and exit")
    p.add_argument("--gpus", type=int, help="plan for this many GPUs (default: those visible)")
    p.add_argument("--gpu-gib", type=float, help="plan for GPUs of this memory in GiB (default: the smallest visible)")
    a = p.parse_args(argv)
    for name, table in (("families", FAMILIES), ("tasks", TASKS), ("methods", METHOD_RUNS)):
        unknown = [x for x in getattr(a, name).split(",") if x not in table]
        if unknown:
            raise SystemExit(f"unknown {name} {', '.join(unknown)}; choose from {', '.join(table)}")
    if a.dry_run and a.limit is None:
        a.limit = 2
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    n_gpus = 0 if a.dry_run else detected_gpus(a)[0]
    if not a.dry_run and not a.print_plan and gpus()[0] == 0:
        raise SystemExit("no GPU visible: the paper's models need GPUs (see --print-plan --gpus N --gpu-gib G for "
                         "the commands, or --dry-run for the CPU rehearsal with tiny checkpoints)")
    runs, where = plan_runs(a, out)
    device = "cpu" if n_gpus == 0 else "cuda"
    for fam_key, desc in where.items():
        print(f"[repro] {FAMILIES[fam_key].label}: {desc}", flush=True)
    if a.print_plan:
        for run in runs:
            print(shlex.join(run.command(out, device)))
        return
    status = run_all(runs, out, device, spawn)
    (out / "runs.json").write_text(json.dumps({"command": "python -m benchmarks.reproduce_paper " + shlex.join(
        argv if argv is not None else sys.argv[1:]), "placement": where, "runs": status}, indent=1) + "\n")
    failed = [s["run"] for s in status if not s["ok"]]
    families = {r.family.key: r.family for r in runs}
    table = report(out, families, {r.task.key: r.task.lmms_task for r in runs})
    print(f"[repro] wrote {table}, {out / 'report.html'}, {out / 'summary.json'}, {out / 'runs.json'}", flush=True)
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed: {', '.join(failed)} (see {out / 'logs'})")


if __name__ == "__main__":
    main()
