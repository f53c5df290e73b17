"""Record files without models: whole-line appends, torn-tail repair, resume keys, device-map files."""

import json

import pytest

from lvspec_eval.adapters.loading import resolve_device_map
from lvspec_eval.config import ArgsError
from lvspec_eval.metrics.records import append_record, read_records, recorded_samples, repair_tail, resume_key


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
