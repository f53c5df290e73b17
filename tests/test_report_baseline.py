"""CI's regression check: fresh runs of the real lmms-eval CLI on the testbed caption task against the
baseline committed under reports/baseline/ (testbed.baseline), and a deliberately
regressed copy of those runs that must fail with a readable table."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.baseline import BASELINE, CHECK_OPTIONS, LIMIT, RUNS, SPEED_CHECK_OPTIONS, TASK, generate
from testbed.baseline import testbed_checkpoints as _testbed_checkpoints  # aliased: pytest collects names starting with 'test'

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fresh_runs(tmp_path_factory) -> list[Path]:
    return generate(tmp_path_factory.mktemp("baseline_runs"), *_testbed_checkpoints())


def check(runs: list[Path], speed: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lvspec_eval.report.cli", "check", "--baseline", str(BASELINE),
           *map(str, runs), *CHECK_OPTIONS, *(SPEED_CHECK_OPTIONS if speed else ())]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_baseline_file_is_committed_and_complete():
    doc = json.loads(BASELINE.read_text())
    assert doc["schema"] == "lvspec-summary" and doc["schema_version"] == 1
    rows = {(r["method"], r["draft"]) for r in doc["rows"]}
    assert len(rows) == len(RUNS) and ("sd", "./testbed/drafter") in rows
    for row in doc["rows"]:
        assert row["samples"] == LIMIT and row["failed"] == 0 and row["retention"] is not None
        assert row["target"] == "./testbed/target" and row["task"] == TASK


def test_fresh_runs_pass_the_committed_baseline(fresh_runs):
    """The deterministic checks only: a decode-speedup check is a timed test and fails under load
    (it did: lvspec 1.02x against the baseline's 2.10x with three jobs on 2 cores)."""
    proc = check(fresh_runs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith(TASK)]
    # 4 rows x (tau, exact match, retention), all ok, no missing or new rows
    assert len(lines) == 3 * len(RUNS) and all(line.rstrip().endswith(" ok") for line in lines), proc.stdout
    assert f"passed: {3 * len(RUNS)} checks" in proc.stdout


def _tamper(path: Path, change) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(change(r)) + "\n" for r in rows))


def test_a_regressed_run_fails_with_a_readable_table(fresh_runs, tmp_path):
    """Slower lvspec (decode time x10), fewer tokens per round (rounds x2) and an sd sample that no
    longer equals ar: each shows as a REGRESSED line, and check exits 1."""
    runs = [tmp_path / p.name for p in fresh_runs]
    for src, dst in zip(fresh_runs, runs):
        shutil.copytree(src, dst)
    records = runs[0]

    def slower(r):
        r["decode_s"] *= 10
        r["total_s"] = r["prefill_s"] + r["decode_s"]
        r["rounds"] *= 2
        r["tau"] = (r["new_tokens"] - 1) / r["rounds"]
        return r

    def unfaithful(r):
        if r["doc_id"] == 0:
            r["exact_match_ar"] = False
        return r

    _tamper(records / "lvspec.jsonl", slower)
    _tamper(records / "sd.jsonl", unfaithful)
    proc = check(runs, speed=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    checks = {"tau_mean", "speedup_decode", "exact_match_ar", "retention"}
    regressed = [line.split() for line in proc.stdout.splitlines() if line.rstrip().endswith("REGRESSED")]
    assert sorted((cells[1], next(c for c in cells if c in checks)) for cells in regressed) == [
        ("lvspec", "speedup_decode"), ("lvspec", "tau_mean"), ("sd", "exact_match_ar")], proc.stdout
    header = proc.stdout.splitlines()[0].split()
    assert header == ["task", "method", "target", "settings", "check", "baseline", "current", "change", "limit",
                      "status"]
    assert "FAILED: 3 of 16 checks regressed or could not be checked" in proc.stdout
