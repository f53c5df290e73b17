"""The real `lmms-eval` CLI end to end on the tiny task, checked from the files it writes."""

import json
import shutil
from pathlib import Path

import pytest

from lvspec_eval.metrics import schema
from lvspec_eval.metrics.records import read_records
from testbed.fixtures.cli import PIXELS, TINY_TASK as TASK, copy_tiny_task, outputs, response, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """A copy of tasks/lvspec_tiny with its clips."""
    return copy_tiny_task(tmp_path_factory.mktemp("tasks") / "lvspec_tiny")


@pytest.fixture(scope="module")
def task_with_bad_doc(tmp_path_factory, task_dir) -> Path:
    dst = tmp_path_factory.mktemp("tasks_bad") / "lvspec_tiny"
    shutil.copytree(task_dir, dst)
    with open(dst / "test.jsonl", "a") as fh:
        fh.write(json.dumps({"id": "missing", "video": "no_such_clip.mp4", "question": "Describe the video.",
                             "answer": "x"}) + "\n")
    return dst


def test_sd_run_records_and_results(tmp_path, tiny_target, tiny_draft, task_with_bad_doc):
    stats = tmp_path / "records.jsonl"
    args = (f"pretrained={tiny_target},draft_pretrained={tiny_draft},method=sd,num_draft_tokens=4,dtype=float32,"
            f"device_map=cpu,{PIXELS},paired_baseline=true,stats_path={stats}")
    proc = run_cli("lvspec_qwen", args, task_with_bad_doc, tmp_path / "out")
    results, samples = outputs(tmp_path / "out")
    records = read_records(stats)
    assert len(samples) == 4 and len(records) == 4, proc.stderr[-3000:]
    by_doc = {r["doc_id"]: r for r in records}
    assert set(by_doc) == {s["doc_id"] for s in samples}

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_target)
    failed = [r for r in records if r.get("error")]
    assert len(failed) == 1 and "no_such_clip.mp4" in failed[0]["error"]
    for s in samples:
        rec = by_doc[s["doc_id"]]
        assert rec["task"] == TASK and rec["split"] == "test" and rec["method"] == "sd"
        if rec.get("error"):
            assert response(s) == ""
            continue
        assert response(s) == rec["text"]
        # sd is lossless: the paired ar decode in the same process gives the same tokens
        assert rec["exact_match_ar"] is True and rec["edit_sim_ar"] == 1.0 and rec["text"] == rec["ar_text"]
        assert rec["new_tokens"] == 24 == len(rec["provenance"]) == len(rec["tokens"])
        assert rec["tau"] == pytest.approx((rec["new_tokens"] - 1) / rec["rounds"])
        assert rec["tau_excl"] == pytest.approx(rec["accepted_exact"] / rec["rounds"])
        assert rec["accepted_loose"] == rec["accepted_shift"] == 0
        assert sum(rec["accepted_per_position"]) == rec["accepted_exact"] and len(rec["accepted_per_position"]) == 4
        assert rec["speedup_decode"] == pytest.approx(rec["ar_decode_s"] / rec["decode_s"])
        assert rec["params"] == {"num_draft_tokens": 4} and rec["draft"] == tiny_draft
        assert rec["total_s"] == pytest.approx(rec["prefill_s"] + rec["decode_s"])
        # per-token text for the report's token view: joins to the full decode, specials spelled out
        for ids, pieces in ((rec["tokens"], rec["token_texts"]), (rec["ar_tokens"], rec["ar_token_texts"])):
            assert len(pieces) == len(ids) and "".join(pieces) == tok.decode(ids, skip_special_tokens=False)

    # every record holds exactly the schema's fields of its kind; vLLM's statistics agree with ours
    for rec in records:
        assert set(rec) == set(schema.written(rec)) and not schema.wrong_kinds(rec), rec.get("error")
        if not rec.get("error"):
            stats = rec["speculative_decoding_stats"]
            assert stats["num_draft_tokens"] == rec["proposed"] and stats["num_spec_tokens"] == 4
            assert stats["num_accepted_draft_tokens"] == rec["accepted_exact"]
            assert stats["draft_acceptance_rate"] == rec["acceptance_rate"]
            assert sum(stats["acceptance_histogram"].values()) == stats["num_spec_steps"] == len(stats["per_step_drafted"])
            assert rec["token_rate_speedup"] == pytest.approx(rec["speedup_decode"])  # lossless: same length as ar

    thr = results["throughput"]
    good = [r for r in records if not r.get("error")]
    mean_tau = sum(r["tau"] for r in good) / len(good)
    assert thr["avg_tau"] == pytest.approx(mean_tau)
    assert thr["avg_exact_match_ar"] == 1.0 and "avg_speedup_decode" in thr
    assert thr["total_gen_tokens"] == 3 * 24 and thr["avg_new_tokens"] == thr["avg_ar_new_tokens"] == 24
    assert not {"avg_samples", "avg_failed", "avg_rank", "avg_world_size"} & set(thr)  # only means as avg_ rows
    assert results["results"][TASK]["exact_match,none"] == pytest.approx(
        sum(float(response(s).strip() == s["target"]) for s in samples) / 4)


def test_ar_matches_builtin_qwen2_5_vl_backend(tmp_path, tiny_target, task_dir):
    """Same checkpoint, same task, bf16 like the built-in backend: identical text."""
    ours = run_cli("lvspec_qwen", f"pretrained={tiny_target},method=ar,dtype=bfloat16,device_map=cpu,{PIXELS},"
                                  f"stats_path={tmp_path / 'ar.jsonl'}", task_dir, tmp_path / "ours")
    _, ours_samples = outputs(tmp_path / "ours")
    theirs = run_cli("qwen2_5_vl", f"pretrained={tiny_target},device_map=cpu,{PIXELS}", task_dir, tmp_path / "theirs")
    _, their_samples = outputs(tmp_path / "theirs")
    assert len(ours_samples) == len(their_samples) == 3, ours.stderr[-2000:] + theirs.stderr[-2000:]
    for a, b in zip(ours_samples, their_samples):
        assert a["doc_id"] == b["doc_id"]
        assert response(a) and response(a) == response(b)
    records = read_records(tmp_path / "ar.jsonl")
    assert all(r["method"] == "ar" and r["tau"] == 1.0 and r["rounds"] == r["new_tokens"] - 1 for r in records)


def test_unknown_model_arg_is_refused_with_the_valid_list(tmp_path, tiny_target, task_dir):
    proc = run_cli("lvspec_qwen", f"pretrained={tiny_target},num_draft_token=3", task_dir, tmp_path / "out")
    text = proc.stdout + proc.stderr
    assert "unknown model arg(s) num_draft_token" in text and "num_draft_tokens" in text
    assert not list((tmp_path / "out").rglob("*_results.json"))


LLAVA_FRAMES = 8


def test_llava_ov_ar_matches_builtin_llava_hf_backend(tmp_path, tiny_llava_target, task_dir):
    """`lvspec_llava_ov` method=ar == lmms-eval's simple `llava_hf` (decord frames), same checkpoint
    and task, bf16 in both."""
    ours = run_cli("lvspec_llava_ov", f"pretrained={tiny_llava_target},method=ar,dtype=bfloat16,device_map=cpu,"
                                      f"max_num_frames={LLAVA_FRAMES},stats_path={tmp_path / 'ar.jsonl'}",
                   task_dir, tmp_path / "ours")
    _, ours_samples = outputs(tmp_path / "ours")
    theirs = run_cli("llava_hf", f"pretrained={tiny_llava_target},device_map=cpu,dtype=bfloat16,"
                                 f"max_frames_num={LLAVA_FRAMES}", task_dir, tmp_path / "theirs", extra=["--force_simple"])
    _, their_samples = outputs(tmp_path / "theirs")
    assert len(ours_samples) == len(their_samples) == 3, ours.stderr[-2000:] + theirs.stderr[-2000:]
    for a, b in zip(ours_samples, their_samples):
        assert a["doc_id"] == b["doc_id"]
        assert response(a) and response(a) == response(b)
    records = read_records(tmp_path / "ar.jsonl")
    assert all(r["family"] == "llava_onevision" and r["new_tokens"] == 24 for r in records)
    assert all(r["video_tokens"] == LLAVA_FRAMES * 16 + 1 and r["draft_video_tokens"] is None for r in records)


def test_llava_ov_specvlm_run_is_lossless_with_a_pruned_padded_drafter(tmp_path, tiny_llava_target, tiny_llava_draft,
                                                                      task_dir):
    stats = tmp_path / "r.jsonl"
    args = (f"pretrained={tiny_llava_target},draft_pretrained={tiny_llava_draft},method=specvlm,num_draft_tokens=4,"
            f"dtype=float32,device_map=cpu,max_num_frames={LLAVA_FRAMES},paired_baseline=true,stats_path={stats}")
    proc = run_cli("lvspec_llava_ov", args, task_dir, tmp_path / "out")
    _, samples = outputs(tmp_path / "out")
    records = read_records(stats)
    assert len(records) == len(samples) == 3, proc.stderr[-3000:]
    for r in records:
        assert not r.get("error") and r["method"] == "specvlm"
        assert r["exact_match_ar"] is True and r["text"] == r["ar_text"]
        assert r["video_tokens"] == 129 and r["draft_video_tokens"] == 12  # floor(0.1 * 129)
        assert r["params"] == {"num_draft_tokens": 4, "draft_video_keep": 0.1, "draft_video_mass": 0.4,
                               "draft_video_layer": None, "draft_video_fill": "linspace"}
