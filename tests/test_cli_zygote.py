"""The tests' lmms-eval fork server (testbed.fixtures.cli_zygote) gives what a fresh `python -m lmms_eval`
gives: the same exit status, answers and records, the run's own stdout and stderr; a run past its timeout
is killed and the server goes on."""

import subprocess

import pytest

from lvspec_eval.metrics.records import read_records
from testbed.fixtures.cli import TIMING_FIELDS, copy_tiny_task, outputs, response, run_cli, without
from testbed.fixtures.cli_zygote import FRESH_ENV, zygote

pytestmark = pytest.mark.slow


def test_a_forked_run_equals_a_fresh_interpreters(tmp_path, tiny_target, monkeypatch):
    task_dir = copy_tiny_task(tmp_path / "tasks" / "lvspec_tiny").parent
    runs = {}
    for how in ("forked", "fresh"):
        if how == "fresh":
            monkeypatch.setenv(FRESH_ENV, "1")
        assert (zygote() is None) == (how == "fresh")
        stats = tmp_path / f"{how}.jsonl"
        proc = run_cli("lvspec_qwen", f"pretrained={tiny_target},method=ar,dtype=float32,device_map=cpu,"
                                      f"stats_path={stats}", task_dir, tmp_path / how,
                       extra=["--limit", "2", "--gen_kwargs", "max_new_tokens=6"])
        assert proc.returncode == 0 and stats.exists(), proc.stderr[-3000:]
        _, samples = outputs(tmp_path / how)
        runs[how] = (proc, [response(s) for s in samples], [without(r, TIMING_FIELDS) for r in read_records(stats)])
    (forked, f_answers, f_records), (fresh, answers, records) = runs["forked"], runs["fresh"]
    assert forked.returncode == fresh.returncode == 0
    assert f_answers == answers and len(answers) == 2 and all(answers)
    assert f_records == records
    for proc in (forked, fresh):  # each run's own streams: lmms-eval logs to stdout, progress bars go to stderr
        assert "lvspec: method=ar" in proc.stdout and "Loading weights" in proc.stderr


def test_runs_go_side_by_side_and_one_past_its_timeout_is_killed(tmp_path, tiny_target, monkeypatch):
    """Two runs at once, each past its 5 s timeout: both killed after about 5 s (not 10: side by side), and
    the server goes on."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.delenv(FRESH_ENV, raising=False)
    server = zygote()
    tasks = tmp_path / "tasks"  # a task whose code takes ten minutes to import: the run outlives any timeout here
    tasks.mkdir()
    (tasks / "lvspec_sleep.yaml").write_text("task: lvspec_sleep\ndoc_to_text: !function utils.doc_to_text\n")
    (tasks / "utils.py").write_text("import time\n\ntime.sleep(600)\n")

    def one(i: int) -> BaseException:
        with pytest.raises(subprocess.TimeoutExpired) as exc:
            server.run(["--model", "lvspec_qwen", "--model_args", f"pretrained={tiny_target},method=ar,device_map=cpu",
                        "--include_path", str(tasks), "--tasks", "lvspec_sleep"], tmp_path / str(i), {}, timeout=5)
        return exc.value

    for i in (0, 1):
        (tmp_path / str(i)).mkdir()
    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        killed = list(pool.map(one, (0, 1)))
    assert len(killed) == 2 and time.monotonic() - t0 < 9
    rc, stdout, stderr = server.run(["--model"], tmp_path, {}, timeout=120)  # argparse: a usage error, status 2
    assert rc == 2 and "--model" in stderr and zygote() is server


def test_installed_task_configs_parse_once_and_come_back_as_copies(tmp_path, monkeypatch):
    """The server's memo of lmms-eval's installed task YAML files: the same configuration as a parse, a
    fresh copy each time, a changed file parsed again, files elsewhere never kept."""
    import os
    import shutil
    from pathlib import Path

    import lmms_eval.tasks
    from lmms_eval import utils

    from testbed.fixtures.cli_zygote import memoised_task_config_loader

    installed = Path(lmms_eval.tasks.__file__).parent
    calls = []

    def plain(x):  # a simple-mode parse leaves `!function` values as yaml nodes, which compare by identity
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, list):
            return [plain(v) for v in x]
        return ("node", x.tag, x.value) if hasattr(x, "tag") else x

    def parse(*args):
        calls.append(args[0])
        return utils.load_yaml_config(*args)

    # a copy of two installed task folders stands in for the installed tree (one file gets changed below)
    root = tmp_path / "installed"
    for name in ("videomme", "mvbench"):
        shutil.copytree(installed / name, root / name)
    load = memoised_task_config_loader(parse, str(root) + os.sep)
    path = str(root / "videomme" / "videomme.yaml")
    first, second = load(path, mode="simple"), load(path, mode="simple")
    assert plain(first) == plain(second) == plain(utils.load_yaml_config(path, mode="simple"))
    assert first is not second and first["doc_to_text"] is not second["doc_to_text"]
    assert first["task"] == "videomme" and calls == [path]
    first["task"] = "changed"  # a caller's change does not reach the memo
    assert load(path, mode="simple")["task"] == "videomme" and calls == [path]
    include = next(str(p) for p in (root / "mvbench").glob("*.yaml") if "include" in p.read_text())
    assert plain(load(include, mode="simple")) == plain(utils.load_yaml_config(include, mode="simple"))  # + include
    with open(path, "a") as fh:
        fh.write("\n# changed\n")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1))
    load(path, mode="simple")
    assert calls.count(path) == 2
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text("task: x\n")
    load(str(elsewhere), mode="simple"), load(str(elsewhere), mode="simple")
    assert calls.count(str(elsewhere)) == 2 and all(key[0].startswith(str(root)) for key in load.memo)
