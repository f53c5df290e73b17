"""`stats_path` is checked and claimed before any model loads: an unwritable path is refused, and a
second run appending to the same record file is refused naming the first (issue 12, bad inputs)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lvspec_eval.config import ArgsError
from lvspec_eval.lmms.run_lock import RunLock, StatsPathError, check_writable, claim_stats_path


def unwritable_paths(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir.jsonl").mkdir()
    paths = {"parent is a file": tmp_path / "a_file" / "r.jsonl", "a directory": tmp_path / "a_dir.jsonl"}
    if Path("/proc/version").exists():  # exists and cannot be opened for writing, not even by root
        paths["read-only file"] = Path("/proc/version")
    return paths


def test_unwritable_stats_paths_are_refused_with_the_fix(tmp_path):
    for what, path in unwritable_paths(tmp_path).items():
        with pytest.raises(StatsPathError, match=r"cannot be written \(.+\); give a writable file path") as err:
            check_writable(path)
        assert str(path) in str(err.value), what
        assert isinstance(err.value, ArgsError)


def test_a_writable_path_is_claimed_without_writing_a_record(tmp_path):
    stats = tmp_path / "new" / "deeper" / "r.jsonl"
    lock = claim_stats_path(stats)
    try:
        assert lock.held and stats.parent.is_dir() and not stats.exists()  # no empty record file left behind
        assert f'"pid": {os.getpid()}' in (stats.parent / "r.jsonl.run.lock").read_text()
    finally:
        lock.release()
    assert not lock.held


def test_a_second_claim_names_the_first_run_and_a_released_lock_is_free(tmp_path):
    stats = tmp_path / "r.jsonl"
    first = claim_stats_path(stats)
    with pytest.raises(StatsPathError, match=f"is in use by another run: pid {os.getpid()} on .*another stats_path"):
        claim_stats_path(stats)
    first.release()
    second = claim_stats_path(stats)  # a finished run frees the file
    second.release()
    first.acquire()  # and a lock can be taken again (a backend's next generate_until)
    assert first.held
    first.release()


def test_a_lock_held_by_another_process_is_detected(tmp_path):
    stats = tmp_path / "r.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from lvspec_eval.lmms.run_lock import claim_stats_path
        lock = claim_stats_path({str(stats)!r})
        print("held", flush=True)
        sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StatsPathError, match=f"in use by another run: pid {holder.pid} "):
            RunLock(stats).acquire()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    lock = claim_stats_path(stats)  # the holder exited: free again
    lock.release()


@pytest.fixture
def no_loading(monkeypatch):
    """Any weight loading fails the test: refusals must come first."""
    from lvspec_eval.adapters.qwen2_5_vl import QwenVLAdapter

    def load(*args, **kwargs):
        raise AssertionError("weights were loaded before the refusal")

    monkeypatch.setattr(QwenVLAdapter, "load", classmethod(load))


def test_backend_refuses_an_unwritable_stats_path_before_loading(tmp_path, tiny_target, no_loading):
    from lvspec_eval.lmms.qwen import LVSpecQwen

    for path in unwritable_paths(tmp_path).values():
        with pytest.raises(StatsPathError, match="cannot be written"):
            LVSpecQwen(pretrained=tiny_target, method="ar", device_map="cpu", stats_path=str(path))


def test_backend_refuses_a_stats_path_in_use_before_loading(tmp_path, tiny_target, no_loading):
    from lvspec_eval.lmms.qwen import LVSpecQwen

    stats = tmp_path / "r.jsonl"
    other = claim_stats_path(stats)
    try:
        with pytest.raises(StatsPathError, match=f"in use by another run: pid {os.getpid()} "):
            LVSpecQwen(pretrained=tiny_target, method="ar", device_map="cpu", stats_path=str(stats))
    finally:
        other.release()
    assert not stats.exists()


def test_rank_0_of_a_data_parallel_run_also_claims_the_base_path(tmp_path):
    """A single-process run writes r.jsonl, a data-parallel one r_rank<N>.jsonl; both resume from all of them,
    so they must not run at once: rank 0 claims r.jsonl too (and takes nothing when it cannot)."""
    base, rank0 = tmp_path / "r.jsonl", tmp_path / "r_rank0.jsonl"
    single = claim_stats_path(base)
    with pytest.raises(StatsPathError, match="'.*r.jsonl' is in use by another run"):
        claim_stats_path(rank0, base)
    free = claim_stats_path(rank0)  # the failed claim let go of the rank file it had taken
    free.release()
    single.release()
    dp = claim_stats_path(rank0, base)
    assert dp.held
    with pytest.raises(StatsPathError, match="in use by another run"):
        claim_stats_path(base)
    rank1 = claim_stats_path(tmp_path / "r_rank1.jsonl")  # the other ranks claim their own files only
    rank1.release()
    dp.release()
