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


def test_a_run_past_its_timeout_is_killed_and_the_server_goes_on(tmp_path, monkeypatch):
    monkeypatch.delenv(FRESH_ENV, raising=False)
    server = zygote()
    with pytest.raises(subprocess.TimeoutExpired):
        server.run(["--model", "lvspec_qwen", "--tasks", "lvspec_tiny_caption"], tmp_path, {}, timeout=0.5)
    rc, stdout, stderr = server.run(["--model"], tmp_path, {}, timeout=120)  # argparse: a usage error, status 2
    assert rc == 2 and "--model" in stderr and zygote() is server
