"""The trained testbed pair: compact weights, materialised checkpoints, both tasks end to end."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lvspec_eval.testbed import clips
from lvspec_eval.testbed import grammar as g

REPO = Path(__file__).resolve().parents[1]
TASK_DIR = REPO / "tasks" / "lvspec_testbed"


# -- trained checkpoints ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def testbed_pair(tmp_path_factory) -> dict[str, Path]:
    from lvspec_eval.testbed.checkpoints import checkpoint

    cache = tmp_path_factory.mktemp("testbed_ckpt")
    return {role: checkpoint(role, cache=cache) for role in ("target", "drafter")}


def test_shipped_weights_are_small():
    from lvspec_eval.testbed.checkpoints import weights_dir

    total = sum(f.stat().st_size for role in ("target", "drafter") for f in weights_dir(role).iterdir())
    assert total <= 40 * 2**20, total


def test_checkpoint_materialises_once(testbed_pair, tmp_path):
    from lvspec_eval.testbed.checkpoints import checkpoint

    folder = testbed_pair["target"]
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert checkpoint("target", cache=folder.parent) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(FileNotFoundError, match="make testbed"):
        checkpoint("target", source=tmp_path)
    with pytest.raises(ValueError, match="unknown testbed role"):
        checkpoint("teacher")


@pytest.mark.parametrize("role", ["target", "drafter"])
def test_checkpoint_loads_by_path_and_equals_the_reduced_model(testbed_pair, role):
    """Full-vocabulary folder, loaded with the ordinary from_pretrained calls, gives the trained
    model's logits on the trained ids, and no unused row ever wins the argmax."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from lvspec_eval.testbed import train as T
    from lvspec_eval.testbed.checkpoints import weights_dir
    from lvspec_eval.testbed.vocab import VocabMap

    folder = testbed_pair[role]
    full = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(folder), dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(str(folder))
    assert full.config.get_text_config().vocab_size == 151936
    info = json.loads((weights_dir(role) / "testbed.json").read_text())
    vmap = VocabMap(info["real_ids"])
    reduced = T.build_model(T.RoleSpec(**info["spec"]), vmap, processor.tokenizer).eval()
    reduced.load_state_dict(load_file(str(weights_dir(role) / "model.safetensors")), strict=False)
    reduced.tie_weights()

    seed = clips.split_seeds("test", 1)[0]
    frames = clips.roundtrip(clips.render(seed)[0])
    pv = processor.video_processor(videos=[torch.from_numpy(frames).permute(0, 3, 1, 2)], return_tensors="pt",
                                   **T.VIDEO_ARGS)["pixel_values_videos"]
    ex = T.Examples(processor.tokenizer, vmap)
    answer, _ = ex.answer(g.caption(clips.clip_attributes(seed), random.Random(0)), anchors=False)
    seq = ex.prompt(g.CAPTION_PROMPT) + answer
    batch = T.collate([(seq, [1.0] * len(seq))], pv.numpy()[None].astype("float16"), int(ex.video_id))
    batch.pop("weights")
    real = torch.tensor([[vmap.real(int(t)) for t in seq]])
    full_batch = dict(batch, input_ids=real, mm_token_type_ids=(real == 151656).long() * 2)
    with torch.inference_mode():
        small = reduced(**batch).logits[0]
        big = full(**full_batch).logits[0]
    assert torch.allclose(big[:, vmap.real_ids], small[:, 1:], atol=1e-4)
    assert set(big.argmax(-1).tolist()) <= set(vmap.real_ids)


def test_testbed_tasks_end_to_end(testbed_pair, tmp_path):
    """Both tasks through the lmms-eval CLI with the trained pair (--limit 3): scores and records."""
    from lvspec_eval.metrics.records import read_records

    for task, metric in (("lvspec_testbed_caption", "anchor_f1"), ("lvspec_testbed_mcq", "accuracy")):
        out = tmp_path / task
        stats = tmp_path / f"{task}.jsonl"
        model_args = (f"pretrained={testbed_pair['target']},draft_pretrained={testbed_pair['drafter']},method=lvspec,"
                      f"dtype=float32,device_map=cpu,max_num_frames=8,min_pixels=3136,max_pixels=12544,"
                      f"paired_baseline=true,stats_path={stats}")
        cmd = [sys.executable, "-m", "lmms_eval", "--model", "lvspec_qwen", "--model_args", model_args, "--device",
               "cpu", "--include_path", str(TASK_DIR), "--tasks", task, "--batch_size", "1", "--limit", "3",
               "--output_path", str(out), "--log_samples"]
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results = json.loads(sorted(out.rglob("*_results.json"))[-1].read_text())
        score = results["results"][task][f"{metric},none"]
        assert 0.0 <= score <= 1.0
        records = read_records(stats)
        assert len(records) == 3 and not any(r.get("error") for r in records), records
        assert all(r["method"] == "lvspec" and r["new_tokens"] > 0 and "exact_match_ar" in r for r in records)
        if task == "lvspec_testbed_caption":
            assert all(r["new_tokens"] >= 30 for r in records)  # full captions, not a stub
