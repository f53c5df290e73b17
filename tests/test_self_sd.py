"""Self-SD through the real backends (in process): `draft_pretrained=self` loads ONE model, drafts
with the target's weights on a pruned video, and is lossless; for every family (Qwen3-VL: the MoE model)."""

import pytest

import lvspec_eval.adapters.llava_onevision as llava_mod
import lvspec_eval.adapters.qwen2_5_vl as qwen_mod
import lvspec_eval.adapters.qwen3_vl as qwen3_mod

from conftest import QWEN3_VL_VIDEO_ARGS, VIDEO_ARGS
from lvspec_eval.engine import build_method
from lvspec_eval.lmms.inputs import prepare_inputs
from lvspec_eval.pruning import keep_budget

BACKENDS = {
    "qwen2_5_vl": ("lvspec_eval.lmms.qwen", "LVSpecQwen", qwen_mod, "tiny_target", VIDEO_ARGS),
    "llava_onevision": ("lvspec_eval.lmms.llava_ov", "LVSpecLlavaOV", llava_mod, "tiny_llava_target",
                        {"max_num_frames": 8}),
    "qwen3_vl": ("lvspec_eval.lmms.qwen3_vl", "LVSpecQwen3VL", qwen3_mod, "tiny_qwen3_moe_target", QWEN3_VL_VIDEO_ARGS),
}


@pytest.mark.parametrize("family", list(BACKENDS))
def test_self_sd_loads_one_model_and_is_lossless(family, request, clips, monkeypatch, tmp_path):
    import importlib

    module, cls_name, adapter_mod, ckpt_fixture, video_args = BACKENDS[family]
    ckpt = request.getfixturevalue(ckpt_fixture)
    loads = []
    real = adapter_mod.load_pretrained
    monkeypatch.setattr(adapter_mod, "load_pretrained", lambda *a, **kw: loads.append(a[1]) or real(*a, **kw))
    backend_cls = getattr(importlib.import_module(module), cls_name)
    backend = backend_cls(pretrained=ckpt, draft_pretrained="self", method="sd", dtype="float32", device_map="cpu",
                          num_draft_tokens=4, paired_baseline=True, stats_path=str(tmp_path / "r.jsonl"),
                          **video_args)

    # one set of weights: one load, the drafter is the target object, no tensor exists twice
    assert loads == [ckpt]
    assert backend.draft is backend.target
    ptrs = {p.data_ptr() for p in backend.target.model.parameters()}
    assert len(ptrs) == len(list(backend.target.model.parameters()))
    assert backend.args.video_keep() == 0.1  # Self-SD prunes the drafter's video by default

    messages = [{"role": "user", "content": [{"type": "video", "url": clips[0]},
                                             {"type": "text", "text": "Describe the video."}]}]
    text, fields = backend._decode_sample(prepare_inputs(backend.target, messages),
                                          backend._decode_config({"max_new_tokens": 20}), seed=0)
    assert fields["exact_match_ar"] is True and text == fields["ar_text"] and fields["new_tokens"] == 20
    assert fields["draft_video_tokens"] == keep_budget(fields["video_tokens"], 0.1) < fields["video_tokens"]


@pytest.mark.parametrize("repr_kind", ["embedding", "hidden", "attention"])
def test_target_prob_anchor_rule_through_the_backend(repr_kind, tiny_target, tiny_draft, clips, tmp_path):
    """anchor_rule=target_prob ignores relevance_repr (no hidden capture or attention probe is needed):
    lambda 0 with w 0 gives ar's text; lambda 1 makes every position a filler (the threshold itself is
    tested on hand-built logits in test_rules.py)."""
    from lvspec_eval.lmms.qwen import LVSpecQwen

    backend = LVSpecQwen(pretrained=tiny_target, draft_pretrained=tiny_draft, method="lvspec", anchor_rule="target_prob",
                         relevance_repr=repr_kind, relax_ratio=0.0, shift_window=0, dtype="float32", device_map="cpu",
                         num_draft_tokens=4, paired_baseline=True, stats_path=str(tmp_path / "r.jsonl"), **VIDEO_ARGS)
    messages = [{"role": "user", "content": [{"type": "video", "url": clips[0]},
                                             {"type": "text", "text": "Describe the video."}]}]
    inputs, cfg = prepare_inputs(backend.target, messages), backend._decode_config({"max_new_tokens": 16})
    text, fields = backend._decode_sample(inputs, cfg, seed=0)
    assert fields["exact_match_ar"] is True and text == fields["ar_text"]
    assert backend.method.capture_layer is None and backend.method.probe_layer is None
    # another setting is another method, built from its args (lambda 1: every position a filler)
    res = build_method(backend.args.replace(relax_ratio=1.0)).decode(backend.target, backend.draft, inputs, cfg, seed=0)
    assert set(res.anchor_flags) == {"f", "-"} and res.accepted_loose > 0
    strict = build_method(backend.args.replace(relax_ratio=1.0, method="sd")).decode(backend.target, backend.draft,
                                                                                    inputs, cfg, seed=0)
    assert strict.accepted_loose == 0 and backend._text(strict.tokens, ()) == fields["ar_text"]
