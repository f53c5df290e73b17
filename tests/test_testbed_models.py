"""The trained testbed pairs (Qwen2.5-VL and LLaVA-OneVision): compact weights, materialised
checkpoints, both tasks end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from testbed import clips
from testbed import grammar as g
from testbed.families import PAIRS

from testbed.fixtures.cli import run_cli
from testbed.paths import TESTBED_TASK_DIR as TASK_DIR
from testbed.paths import VIDEO_MODEL_ARGS
#: The roles whose weights are shipped in testbed/weights/ (the Qwen3-VL pair, `make testbed-qwen3`, joins
#: here and in TRAINED_PAIRS once its weights are committed).
ROLES = ("target", "drafter", "llava_target", "llava_drafter", "qwen3_target", "qwen3_drafter")
TRAINED_PAIRS = sorted(p for p, pair in PAIRS.items() if pair.target in ROLES and pair.drafter in ROLES)


# -- trained checkpoints ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def testbed_pair(trained_checkpoints) -> dict[str, Path]:
    return {role: trained_checkpoints[role] for role in ROLES}


def test_shipped_weights_are_small():
    from testbed.checkpoints import weights_dir

    total = sum(f.stat().st_size for role in ROLES for f in weights_dir(role).iterdir())
    assert total <= 40 * 2**20, total


def test_checkpoint_materialises_once(testbed_pair, tmp_path):
    from testbed.checkpoints import checkpoint

    folder = testbed_pair["target"]
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert checkpoint("target", cache=folder.parent) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(FileNotFoundError, match="make testbed"):
        checkpoint("target", source=tmp_path)
    with pytest.raises(ValueError, match="unknown testbed role"):
        checkpoint("teacher")


@pytest.mark.parametrize("role", ROLES)
def test_checkpoint_loads_by_path_and_equals_the_reduced_model(testbed_pair, role):
    """Full-vocabulary folder, loaded with the ordinary from_pretrained calls, gives the trained
    model's logits on the trained ids, and no unused row ever wins the argmax."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from testbed.checkpoints import VOCAB_ROWS, weights_dir
    from testbed.families import family, tied_embeddings
    from testbed.train.data import Examples, collate
    from testbed.train.model import build_model
    from testbed.train.roles import RoleSpec
    from testbed.vocab import VocabMap

    folder = testbed_pair[role]
    info = json.loads((weights_dir(role) / "testbed.json").read_text())
    spec = RoleSpec.from_record(info["spec"])
    fam = family(spec.family)
    full = AutoModelForImageTextToText.from_pretrained(str(folder), dtype=torch.float32).eval()
    assert isinstance(full, fam.model_class())
    processor = AutoProcessor.from_pretrained(str(folder))
    assert full.config.get_text_config().vocab_size == VOCAB_ROWS.get(role, 151936)
    vmap = VocabMap(info["real_ids"])
    reduced = build_model(spec, vmap, processor.tokenizer).eval()
    reduced.load_state_dict(load_file(str(weights_dir(role) / "model.safetensors")), strict=False)
    if tied_embeddings(reduced.config):
        reduced.tie_weights()

    seed = clips.split_seeds("test", 1)[0]
    frames = clips.roundtrip(clips.render(seed)[0])
    pv = fam.encode(frames, processor.video_processor)  # the saved processor gives the trained-on tensors
    ex = Examples(processor.tokenizer, vmap, fam.name)
    answer, _ = ex.answer(g.caption(clips.clip_attributes(seed), random.Random(0)), anchors=False)
    seq = ex.prompt(g.CAPTION_PROMPT) + answer
    batch = collate([(seq, [1.0] * len(seq))], pv[None].astype("float16"), int(ex.video_id), fam.name)
    batch.pop("weights")
    real = torch.tensor([[vmap.real(int(t)) for t in seq]])
    video_id = processor.tokenizer.convert_tokens_to_ids(fam.video_token)
    full_batch = dict(batch, input_ids=real, **fam.token_type_inputs(real, video_id))
    with torch.inference_mode():
        small = reduced(**batch).logits[0]
        big = full(**full_batch).logits[0]
    assert torch.allclose(big[:, vmap.real_ids], small[:, 1:], atol=1e-4)
    assert set(big.argmax(-1).tolist()) <= set(vmap.real_ids)


def test_every_pair_is_shipped():
    assert set(TRAINED_PAIRS) == set(PAIRS)


@pytest.mark.parametrize("pair", TRAINED_PAIRS)
def test_testbed_tasks_end_to_end(testbed_pair, tmp_path, pair):
    """Both tasks through the lmms-eval CLI with each trained pair (--limit 3, one run): scores and records."""
    from lvspec_eval.metrics.records import read_records

    model, target, drafter, _ = PAIRS[pair]
    metrics = {"lvspec_testbed_caption": "anchor_f1", "lvspec_testbed_mcq": "accuracy"}
    out, stats = tmp_path / "out", tmp_path / "records.jsonl"
    model_args = (f"pretrained={testbed_pair[target]},draft_pretrained={testbed_pair[drafter]},method=lvspec,"
                  f"dtype=float32,device_map=cpu,{VIDEO_MODEL_ARGS},paired_baseline=true,stats_path={stats}")
    proc = run_cli(model, model_args, TASK_DIR, out, extra=["--limit", "3"], tasks=",".join(metrics), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(sorted(out.rglob("*_results.json"))[-1].read_text())["results"]
    records = read_records(stats)
    for task, metric in metrics.items():
        assert 0.0 <= results[task][f"{metric},none"] <= 1.0
        mine = [r for r in records if r["task"] == task]
        assert len(mine) == 3 and not any(r.get("error") for r in mine), records
        assert all(r["method"] == "lvspec" and r["new_tokens"] > 0 and "exact_match_ar" in r for r in mine)
        if task == "lvspec_testbed_caption":
            assert all(r["new_tokens"] >= 30 for r in mine)  # full captions, not a stub
