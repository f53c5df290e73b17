"""benchmarks/reproduce_paper.py: the plan of the paper's protocol (commands, placement over GPUs), the
paper-layout table, and a dry run through the real lmms-eval CLI (tiny checkpoints, two docs, the
offline testbed tasks, CPU) checked from the files it writes (the CLI exits 0 even on failure)."""

import json
import re
import shlex

import pytest

from benchmarks.reproduce_paper import FAMILIES, METHOD_RUNS, PAPER_ROWS, main, paper_table, placement
from lvspec_eval.config import LVSpecArgs
from lvspec_eval.report.lmms_files import parse_model_args
from lvspec_eval.metrics.records import read_records


def test_placement_data_parallel_when_the_pair_fits_one_gpu():
    launcher, args, _ = placement(FAMILIES["qwen"], 4, 139.0)
    assert launcher[1:] == ["-m", "accelerate.commands.launch", "--num_processes", "4", "-m", "lmms_eval"] and args == ""
    launcher, args, _ = placement(FAMILIES["qwen"], 1, 139.0)
    assert launcher[1:] == ["-m", "lmms_eval"] and args == ""


def test_placement_model_parallel_for_the_72b_target():
    launcher, args, desc = placement(FAMILIES["llava_ov"], 8, 80.0)
    assert launcher[1:] == ["-m", "lmms_eval"] and args == "device_map=balanced,draft_device_map=cuda:0"
    assert "8 GPUs" in desc
    with pytest.raises(SystemExit, match="needs about 165 GiB"):
        placement(FAMILIES["llava_ov"], 1, 139.0)


def plan(tmp_path, capsys, *extra):
    main(["--print-plan", "--out", str(tmp_path), *extra])
    lines = capsys.readouterr().out.splitlines()
    return [shlex.split(line) for line in lines if not line.startswith("[repro]")]


def test_plan_holds_the_papers_protocol(tmp_path, capsys):
    commands = plan(tmp_path, capsys, "--gpus", "2", "--gpu-gib", "139")
    assert len(commands) == len(FAMILIES) * 2 * len(METHOD_RUNS)
    stats = set()
    for cmd in commands:
        args = parse_model_args(cmd[cmd.index("--model_args") + 1])
        stats.add(args.pop("stats_path"))
        parsed = LVSpecArgs.from_kwargs(**args)  # every run's model args are valid backend args
        assert parsed.max_num_frames == 64 and parsed.dtype == "bfloat16"
        task = cmd[cmd.index("--tasks") + 1]
        assert task in ("video_dc499", "videomme")
        gen = cmd[cmd.index("--gen_kwargs") + 1] if "--gen_kwargs" in cmd else None
        assert gen == ("max_new_tokens=256" if task == "video_dc499" else None)
        model = cmd[cmd.index("--model") + 1]
        if model == "lvspec_qwen":  # 32B + 7B fits a 139 GiB GPU: data parallel over both
            assert "accelerate.commands.launch" in cmd and cmd[cmd.index("--num_processes") + 1] == "2"
            assert parsed.pretrained == "Qwen/Qwen2.5-VL-32B-Instruct" and parsed.device_map is None
        else:  # the 72B target spreads over both GPUs
            assert "accelerate.commands.launch" not in cmd and parsed.device_map == "balanced"
            assert parsed.pretrained == "llava-hf/llava-onevision-qwen2-72b-ov-hf"
    assert len(stats) == len(commands)  # one record file per run
    methods = {(parse_model_args(c[c.index("--model_args") + 1])["method"],
                parse_model_args(c[c.index("--model_args") + 1]).get("relax_ratio")) for c in commands}
    assert methods == {("ar", None), ("sd", None), ("specvlm", None), ("lvspec", "0.7"), ("lvspec", "0.9"),
                       ("random", None)}


def test_paper_table_puts_each_run_on_its_row():
    fams = {k: f for k, f in FAMILIES.items()}
    q, llava = FAMILIES["qwen"].target, FAMILIES["llava_ov"].target

    def row(target, method, settings, tau, speedup, retention):
        return {"task": "video_dc499", "target": target, "method": method, "settings": settings, "tau_excl_mean": tau,
                "speedup_decode_pooled": speedup, "retention": retention, "settings_label": "x"}

    rows = [row(q, "ar", {}, None, 1.0, 1.0), row(q, "sd", {"num_draft_tokens": 10}, 3.1, 1.3, 1.0),
            row(q, "lvspec", {"relax_ratio": 0.7, "shift_window": 2}, 7.5, 2.5, 0.99),
            row(q, "lvspec", {"relax_ratio": 0.9, "shift_window": 0}, 8.8, 2.9, 0.93),
            row(llava, "lvspec", {"relax_ratio": 0.7, "shift_window": 2}, 7.2, 2.8, 0.995)]
    text = paper_table(rows, fams, {"video_dc499": "video_dc499"})
    assert "| Qwen2.5-VL-32B, standard SD (strict) | 3.10 | 3.28 | 1.30x | 1.41x | 100.0% | 100% |" in text
    assert "| Qwen2.5-VL-32B, LVSpec | 7.50 | 7.76 | 2.50x | 2.70x | 99.0% | > 99.8% |" in text
    assert "| LLaVA-OneVision-72B, LVSpec | 7.20 | 7.34 | 2.80x | 2.94x | 99.5% | > 99.8% |" in text
    assert "| LVSpec λ = 0.9 (no PST) | 8.80 | 8.97 | 2.90x | 3.03x | 93.0% | 92.8% |" in text
    assert "| random relaxation 75% (32B/7B) | not run | 7.42 |" in text
    assert "| Qwen2.5-VL-32B | ar |" in text  # runs without a paper row are listed below the table


@pytest.mark.slow
def test_dry_run_writes_results_records_html_and_the_paper_table(tmp_path):
    out = tmp_path / "repro"
    methods = ["ar", "lvspec_0.7"]
    # one family end to end (the other family's plan and table rows: the tests above; its backend: test_cli.py);
    # in this process, its lmms-eval runs forked from the tests' server (testbed.fixtures.cli_zygote)
    from testbed.fixtures.cli_zygote import zygote_spawn

    main(["--dry-run", "--out", str(out), "--families", "qwen", "--methods", ",".join(methods)], spawn=zygote_spawn())
    runs = json.loads((out / "runs.json").read_text())["runs"]
    assert len(runs) == 2 * len(methods) and all(r["ok"] for r in runs)  # 2 tasks x methods
    for r in runs:
        results = json.loads(open(r["results"][-1]).read())
        task = "lvspec_testbed_caption" if "video_dc499" in r["run"] else "lvspec_testbed_mcq"
        assert task in results["results"]
        records = read_records(r["records"][0])
        assert len(records) == 2 and not any(x.get("error") for x in records)  # two docs, decoded
        assert all(x["task"] == task for x in records)
        if "video_dc499" in r["run"]:
            assert all(x["max_new_tokens"] == 24 for x in records)  # the --gen_kwargs of the run
    html = (out / "report.html").read_text()
    assert "<html" in html.lower() and "lvspec" in html
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert {(r["task"], r["method"]) for r in rows} == {(t, m) for t in ("lvspec_testbed_caption", "lvspec_testbed_mcq")
                                                        for m in ("ar", "lvspec")}
    table = (out / "paper_table.md").read_text()
    for task in ("video_dc499", "videomme"):
        assert f"## {task}" in table
    for setting, *_ in PAPER_ROWS:
        assert f"| {setting} |" in table
    ours = re.findall(r"\| (Qwen2\.5-VL-32B|LLaVA-OneVision-72B), LVSpec \| ([0-9.]+) \| [0-9.]+ \| ([0-9.]+)x \|", table)
    assert len(ours) == 2 and all(o[0] == "Qwen2.5-VL-32B" for o in ours)  # on both tasks, measured tau and speedup
    assert "| Qwen2.5-VL-32B, standard SD (strict) | not run |" in table
