"""Record files without models: whole-line appends, torn-tail repair, resume keys, device-map files,
the JSONL reader policy, the record schema against the writer and the docs, vLLM's statistics, and
results.json's block."""

import json

import pytest

from lvspec_eval.adapters.loading import resolve_device_map
from lvspec_eval.config import ArgsError
from lvspec_eval.metrics import schema
from lvspec_eval.metrics.jsonl import JSONLError, TruncatedLineWarning
from lvspec_eval.metrics.records import (RESUME_KEYS, append_record, base_record, decode_fields, paired_fields,
                                         read_records, recorded_samples, repair_tail, resume_key,
                                         speculative_decoding_stats)
from testbed.paths import REPO


def record(doc_id, **extra):
    return {"record_version": 1, "task": "t", "split": "test", "doc_id": doc_id, "method": "sd", "family": "qwen2_5_vl",
            "target": "T", "draft": "D", "params": {"num_draft_tokens": 4}, "dtype": "float32",
            "paired_baseline": False, "max_new_tokens": 24, "until": [], "video": {"max_num_frames": 8},
            "text": f"answer {doc_id}", "new_tokens": 3, **extra}


def test_repair_tail_cuts_only_a_partial_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    assert repair_tail(path) == 0 and not path.exists()
    append_record(path, record(0))
    append_record(path, record(1))
    whole = path.read_bytes()
    assert repair_tail(path) == 0 and path.read_bytes() == whole
    with open(path, "ab") as fh:
        fh.write(b'{"record_version":1,"ta')
    assert repair_tail(path) == len(b'{"record_version":1,"ta') and path.read_bytes() == whole
    append_record(path, record(2))
    assert [r["doc_id"] for r in read_records(path)] == [0, 1, 2]
    only = tmp_path / "only_partial.jsonl"
    only.write_bytes(b'{"a":' * 20000)  # longer than one scan chunk, no newline at all
    assert repair_tail(only) == 100000 and only.read_bytes() == b""


def test_recorded_samples_match_on_settings_and_skip_failures(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b_rank1.jsonl"
    append_record(a, record(0))
    append_record(a, record(1, error="ValueError: cannot read video"))
    append_record(b, record(2))
    done = recorded_samples([a, b])
    assert set(done) == {resume_key(record(0)), resume_key(record(2))}
    # timings, device and rank do not matter; settings that change the output do
    assert resume_key(record(0, decode_s=9.0, rank=3, world_size=4, device="cuda:3")) in done
    for change in ({"params": {"num_draft_tokens": 5}}, {"max_new_tokens": 25}, {"until": ["\n"]}, {"dtype": "bfloat16"},
                   {"video": {"max_num_frames": 16}}, {"paired_baseline": True}, {"target": "T2"}, {"task": "u"}):
        assert resume_key(record(0, **change)) not in done, change


def test_device_map_files_are_checked_before_loading(tmp_path):
    assert resolve_device_map("auto", "target") == "auto"
    with pytest.raises(ArgsError, match="does not exist"):
        resolve_device_map(str(tmp_path / "none.json"), "target")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArgsError, match="not valid JSON"):
        resolve_device_map(str(bad), "target")
    bad.write_text(json.dumps(["model.visual", 0]))
    with pytest.raises(ArgsError, match="JSON object"):
        resolve_device_map(str(bad), "drafter")
    good = tmp_path / "map.json"
    good.write_text(json.dumps({"model.visual": 0, "model.language_model.layers.1": "disk", "lm_head": "cuda:1"}))
    with pytest.raises(ArgsError, match="offload_folder"):
        resolve_device_map(str(good), "target")
    assert resolve_device_map(str(good), "target", str(tmp_path)) == json.loads(good.read_text())


# -- one JSONL reader policy --------------------------------------------------------------------------

def test_reader_policy_truncated_last_line_is_warned_and_skipped(tmp_path):
    path = tmp_path / "r.jsonl"
    append_record(path, record(0))
    with open(path, "ab") as fh:
        fh.write(b'{"record_version":1,"ta')
    with pytest.warns(TruncatedLineWarning, match=r"r.jsonl:2: last line is truncated"):
        assert [r["doc_id"] for r in read_records(path)] == [0]
    seen = []
    assert [r["doc_id"] for r in read_records(path, warn=seen.append)] == [0] and len(seen) == 1
    # resume reads the same way
    with pytest.warns(TruncatedLineWarning):
        assert set(recorded_samples([path])) == {resume_key(record(0))}
    # a complete last line without its newline is used (some writers omit it), by the reader and the repair
    whole = tmp_path / "whole.jsonl"
    whole.write_text(json.dumps(record(0)) + "\n" + json.dumps(record(1)))
    assert [r["doc_id"] for r in read_records(whole)] == [0, 1]
    assert repair_tail(whole) == 0 and whole.read_text().endswith("}\n")
    append_record(whole, record(2))
    assert [r["doc_id"] for r in read_records(whole)] == [0, 1, 2]
    # a broken line in the middle is an error naming file:line
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(record(0)) + "\n{oops\n" + json.dumps(record(1)) + "\n")
    with pytest.raises(JSONLError, match=r"bad.jsonl:2: not a JSON line"):
        read_records(bad)


def _append_many(path: str, worker: int, n: int) -> None:
    for i in range(n):
        append_record(path, record(worker * 1000 + i, text="x" * 70000))  # larger than a pipe buffer


def test_concurrent_appends_stay_whole_lines_under_the_file_lock(tmp_path):
    import multiprocessing

    path = tmp_path / "r.jsonl"
    procs = [multiprocessing.get_context("spawn").Process(target=_append_many, args=(str(path), w, 15))
             for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3 * 15 + 1
    assert sorted(json.loads(line)["doc_id"] for line in lines[:-1]) == sorted(
        w * 1000 + i for w in range(3) for i in range(15))
    assert (tmp_path / "r.jsonl.lock").exists()  # filelock's lock file, beside the records


# -- one record schema ---------------------------------------------------------------------------------

def test_writer_writes_exactly_the_schema_fields():
    from lvspec_eval.config import DecodeConfig, LVSpecArgs
    from lvspec_eval.engine.loop import DecodeResult

    args = LVSpecArgs(method="lvspec", paired_baseline=True)
    cfg = DecodeConfig(max_new_tokens=8, eos_ids=(1,), num_draft_tokens=4, until=("\n",))
    base = base_record(args, cfg, dtype="bfloat16", task="t", split="test", doc_id=3, family="qwen2_5_vl", device="cpu",
                       device_name="cpu", rank=0, world_size=1)
    assert tuple(base) == tuple(f.name for f in schema.EVERY.fields)
    res = DecodeResult(tokens=[5, 6, 7], provenance="PEB", anchor_flags="-a-", rounds=1, proposed=1,
                       accepted_exact=1, accepted_per_position=[1, 0, 0, 0], per_step_drafted=[1],
                       per_step_accepted=[1], prefill_s=0.5, decode_s=1.0, stop_reason="eos")
    ar = DecodeResult(tokens=[5, 6, 8, 9], provenance="PTTT", rounds=3, prefill_s=0.5, decode_s=2.0)
    # the backend adds text, token_texts, prompt_tokens and ar_token_texts
    full = {**base, **decode_fields(res, 4), "text": "a", "token_texts": ["a", "", ""], "prompt_tokens": 9,
            **paired_fields(res, ar, "a", "b"), "ar_token_texts": ["a", "b", "", ""]}
    assert set(full) == set(schema.written(full)) and not schema.wrong_kinds(full)
    assert schema.required(full) == tuple(f for f in schema.written(full) if schema.FIELDS[f].required)
    failed = {**base, "error": "ValueError: x"}
    assert set(schema.written(failed)) == set(failed)
    assert RESUME_KEYS == ("record_version", "task", "split", "doc_id", "method", "family", "target", "draft",
                           "params", "dtype", "paired_baseline", "max_new_tokens", "until", "video")
    # by hand: 2 decode-loop tokens in 1.0 s against ar's 3 in 2.0 s
    assert full["token_rate_speedup"] == (2 / 1.0) / (3 / 2.0) and full["speedup_decode"] == 2.0


def test_vllm_statistics_by_hand():
    # 4 rounds: 3 drafted 3 tokens (2, 0, 3 accepted), the last drafted nothing (one token left)
    stats = speculative_decoding_stats([2, 0, 3, 0], [3, 3, 3, 0], 3)
    assert stats == {
        "mean_acceptance_length": 1 + 5 / 3,  # bonus included
        "draft_acceptance_rate": 5 / 9,
        "acceptance_histogram": {"0": 1, "2": 1, "3": 1},  # bonus excluded, zero counts omitted
        "num_spec_steps": 3,
        "num_draft_tokens": 9,
        "num_accepted_draft_tokens": 5,
        "num_spec_tokens": 3,
        "per_step_accepted": [2, 0, 3],
        "per_step_drafted": [3, 3, 3],
    }
    assert speculative_decoding_stats([0, 0], [0, 0], 0) is None  # ar: no speculative decoding
    empty = speculative_decoding_stats([0], [0], 4)  # EOS-free run of one plain step: no spec steps
    assert empty["num_spec_steps"] == 0 and empty["mean_acceptance_length"] is None
    assert [f.name for f in schema.VLLM_STATS] == list(stats)


def test_docs_tables_are_generated_from_the_schema():
    """docs/records.md's tables come from `python -m lvspec_eval.metrics.schema --write docs/records.md`."""
    doc = REPO / "docs" / "records.md"
    text = doc.read_text(encoding="utf-8")
    assert schema.main(["--check", str(doc)]) == 0, "run: python -m lvspec_eval.metrics.schema --write docs/records.md"
    for name in schema.TABLES:
        assert f"<!-- BEGIN generated: {name} -->" in text
    for f in schema.FIELDS.values():
        assert f"| `{f.name}` |" in text
    # and the check can fail
    assert schema.render_doc(text.replace("| `tau_excl` |", "| `tau_x` |")) != text.replace("| `tau_excl` |",
                                                                                          "| `tau_x` |")


def test_every_glossary_metric_is_computed_once():
    from lvspec_eval import glossary
    from lvspec_eval.metrics import aggregate

    # single-run statistics; score and retention (lmms-eval's scores); tau_ratio (a run against its counterpart)
    assert set(aggregate.STATISTICS) | {"score", "retention", "tau_ratio"} == set(glossary.METRICS)
    assert callable(aggregate.tau_ratio)


# -- results.json's block -------------------------------------------------------------------------------

def test_results_json_block_has_only_means_and_covers_the_given_records():
    from lmms_eval.models.model_utils.gen_metrics import log_metrics, reset_logged_metrics, summarize_logged_metrics

    from lvspec_eval.lmms.run_metrics import RUN_MEANS, run_block

    def rec(doc_id, tau, n, ar_n, speedup, stats):
        return record(doc_id, tau=tau, new_tokens=n, total_s=2.0, speedup_decode=speedup, ar_new_tokens=ar_n,
                      exact_match_ar=doc_id == 0, speculative_decoding_stats=stats)

    records = [rec(0, 2.0, 5, 5, 1.5, {"mean_acceptance_length": 2.0, "draft_acceptance_rate": 0.5}),
               rec(1, 4.0, 9, 7, 2.5, {"mean_acceptance_length": 3.5, "draft_acceptance_rate": 0.75}),
               record(2, error="ValueError: cannot read video")]
    reset_logged_metrics()
    log_metrics(**run_block(records))
    block = summarize_logged_metrics()
    reset_logged_metrics()
    assert block == {"total_gen_tokens": 14, "total_elapsed_time": 4.0, "avg_speed": 3.5, "avg_latency": 2.0,
                     "avg_tau": 3.0, "avg_new_tokens": 7.0, "avg_ar_new_tokens": 6.0, "avg_speedup_decode": 2.0,
                     "avg_exact_match_ar": 0.5, "avg_mean_acceptance_length": 2.75, "avg_draft_acceptance_rate": 0.625}
    assert {k[4:] for k in block if k.startswith("avg_")} <= set(RUN_MEANS) | {"speed", "latency"}
