"""Qwen3-VL (`lvspec_qwen3_vl`): what the family adds to the invariants that tests/test_engine.py and
tests/test_pruning.py already run on a dense and a MoE Qwen3-VL pair (conftest's `qwen3_vl`,
`qwen3_vl_moe` families: sd == ar with identical, random and scripted drafters, specvlm and
Self-SD == ar, pruned prefill == masked full forward, block == step, probes == eager attention).

Here: inputs and defaults as lmms-eval's own `qwen3_vl` (read from its class and source), the model
class from the config, timestamps, rope state, DeepStack under pruning, MoE routing, the probes'
q_norm, bad inputs, and the real CLI against the built-in (bf16) and lmms-eval's `videomme` code."""

import inspect
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import QWEN3_VL_VIDEO_ARGS, method, video_messages
from lvspec_eval.adapters import probes
from lvspec_eval.adapters.loading import TokenizerMismatchError
from lvspec_eval.adapters.qwen3_vl import PATCH_SIZE, SYSTEM_PROMPT, Qwen3VLAdapter, UnsupportedCheckpointError
from lvspec_eval.config import (DEFAULT_QWEN3_VL_DRAFT, DEFAULT_QWEN3_VL_TARGET, QWEN3_VL_BUILTIN, DecodeConfig,
                                LVSpecArgs)
from lvspec_eval.lmms.inputs import prepare_inputs
from lvspec_eval.metrics.records import read_records
from lvspec_eval.pruning import VIDEO_KEEP_KEY

EOS = 151645
N_NEW = 24


AR, SD = method("ar"), method("sd")


def cfg(k=4, n=N_NEW):
    return DecodeConfig(max_new_tokens=n, eos_ids=(EOS,), num_draft_tokens=k)


def backend_class():
    from lvspec_eval.lmms.qwen3_vl import LVSpecQwen3VL

    return LVSpecQwen3VL


def request(doc_to_messages, gen_kwargs: dict, doc_id: int, task: str):
    """A chat request as lmms-eval's task code builds it."""
    from lmms_eval.api.instance import Instance

    return Instance(request_type="generate_until", idx=0, metadata={"task": task, "doc_id": doc_id, "repeats": 1},
                    arguments=("ctx", doc_to_messages, gen_kwargs, doc_id, task, "test"))


def lmms_messages(clip: str, question: str = "Describe the video.") -> list:
    """A request's messages as lmms-eval builds them (a fresh list per call, as doc_to_messages does)."""
    return [{"role": "user", "content": [{"type": "video", "url": clip}, {"type": "text", "text": question}]}]


# -- the checkpoint, tokenizer and model class -----------------------------------------------------
def test_qwen3_tokenizer_and_model_class_from_the_config(tiny_qwen3_moe_target, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_qwen3_moe_target)
    assert len(tok) == 151669 and tok("Hello world")["input_ids"] == [9707, 1879]
    assert tok.convert_tokens_to_ids(["<tool_call>", "<tool_response>", "<think>", "</think>"]) == [
        151657, 151665, 151667, 151668]
    assert tok.eos_token_id == EOS and tok.convert_tokens_to_ids("<|video_pad|>") == 151656
    # a MoE checkpoint under a name without "A<n>B" (lmms-eval's own rule) still loads as MoE
    renamed = shutil.copytree(tiny_qwen3_moe_target, tmp_path / "qwen3_vl_tiny_moe")
    adapter = Qwen3VLAdapter.load(str(renamed), dtype="float32", **QWEN3_VL_VIDEO_ARGS)
    assert type(adapter.model).__name__ == "Qwen3VLMoeForConditionalGeneration"
    assert any("experts" in n for n, _ in adapter.model.named_parameters())


# -- inputs and defaults as lmms-eval's own qwen3_vl -----------------------------------------------
@pytest.fixture(scope="module")
def builtin_call(tiny_qwen3_target, clips):
    """Run lmms-eval's chat `qwen3_vl` on one request and capture what reaches `model.generate`."""
    from lmms_eval.models.chat.qwen3_vl import Qwen3_VL

    lm = Qwen3_VL(pretrained=tiny_qwen3_target, device="cpu", device_map="cpu", **QWEN3_VL_VIDEO_ARGS)
    captured = {}

    def generate(**kwargs):
        captured.update(kwargs)
        return torch.cat([kwargs["input_ids"], torch.tensor([[EOS]])], 1)

    lm.model.generate = generate
    lm.task_dict = {"t": {"test": {0: {"clip": clips[1]}}}}
    lm.generate_until([request(lambda doc: lmms_messages(doc["clip"]), {"until": ["\n\n"]}, 0, "t")])
    return lm, captured


@pytest.fixture(scope="module")
def ours(tiny_qwen3_target, tmp_path_factory):
    return backend_class()(pretrained=tiny_qwen3_target, method="ar", device_map="cpu",
                           stats_path=str(tmp_path_factory.mktemp("q3") / "r.jsonl"), **QWEN3_VL_VIDEO_ARGS)


def test_inputs_equal_the_builtin_ones(builtin_call, ours, clips):
    """The processor output our backend decodes on == what lmms-eval's qwen3_vl hands to generate:
    same ids (system turn, timestamps), token types, pixels and grid."""
    _, captured = builtin_call
    inputs = prepare_inputs(ours.target, lmms_messages(clips[1]), ours.builtin.backend)
    assert set(inputs) == {k for k in captured if torch.is_tensor(captured[k])}
    for key, value in inputs.items():
        assert torch.equal(value, captured[key]), key


def test_defaults_and_stop_semantics_are_the_builtins(builtin_call, ours):
    """Read from lmms-eval's class and source, not from memory: dtype, frame rule, pixel bounds,
    system prompt, patch size, max_new_tokens, EOS, greedy, `until` ignored; and the default pair."""
    import lmms_eval.models.chat.qwen3_vl as chat
    import lmms_eval.models.simple.qwen3_vl as simple

    lm, captured = builtin_call
    params = inspect.signature(simple.Qwen3_VL.__init__).parameters
    args = LVSpecArgs()
    assert (args.min_pixels, args.max_pixels, args.max_num_frames, args.fps) == tuple(
        params[k].default for k in ("min_pixels", "max_pixels", "max_num_frames", "fps"))
    assert params["system_prompt"].default == SYSTEM_PROMPT
    assert re.search(r'dtype_key:\s*"bfloat16"', inspect.getsource(simple.Qwen3_VL.__init__))
    assert QWEN3_VL_BUILTIN.dtype == "bfloat16" and lm.model.dtype == torch.bfloat16
    assert f"image_patch_size={PATCH_SIZE}" in inspect.getsource(chat.Qwen3_VL.generate_until)
    # frame rule and pixel bounds: the same per-video kwargs for the same settings
    adapter = ours.target
    assert adapter.builtin_video_kwargs() == lm._build_video_kwargs()
    settings = dict(fps=1.5, max_num_frames=6, min_pixels=params["min_pixels"].default,
                    max_pixels=params["max_pixels"].default)
    assert Qwen3VLAdapter(adapter.model, adapter.processor, "x", **settings).builtin_video_kwargs() \
        == simple.Qwen3_VL._build_video_kwargs(SimpleNamespace(total_pixels=None, **settings))
    # stop semantics and length: what the built-in passed to generate for a task without max_new_tokens
    ours_cfg = ours._decode_config({"until": ["\n\n"]})
    assert captured["max_new_tokens"] == ours.builtin.max_new_tokens == simple.Qwen3_VL.DEFAULT_GEN_KWARGS["max_new_tokens"]
    assert captured["do_sample"] is False and "stop_strings" not in captured
    assert (captured["eos_token_id"],) == ours_cfg.eos_ids == (EOS,)
    assert "until" not in inspect.getsource(chat.Qwen3_VL.generate_until).replace("generate_until", "")
    assert ours_cfg.until == ()
    assert ours.builtin is QWEN3_VL_BUILTIN and ours.dtype == "bfloat16" and ours.target.model.dtype == torch.bfloat16
    # the default pair: the largest dense Instruct model and a small one
    assert DEFAULT_QWEN3_VL_TARGET == "Qwen/Qwen3-VL-32B-Instruct" and DEFAULT_QWEN3_VL_DRAFT.endswith("-Instruct")
    assert params["pretrained"].default == DEFAULT_QWEN3_VL_DRAFT  # lmms-eval's own default checkpoint


def test_timestamps_come_from_the_video_metadata(qwen3_target, qwen3_draft, qwen3_inputs, clips):
    """Every temporal slice (2 frames) is preceded by "<t seconds>", t the mean time of its frames
    (decord indices linspace(0, total-1, n).round() at the clip's fps); the drafter's own processor
    would give the same ids (and the engine feeds it the target's)."""
    import decord
    import numpy as np

    vr = decord.VideoReader(clips[0])
    idx = np.linspace(0, len(vr) - 1, 8).round()
    times = [(idx[i] + idx[i + 1]) / 2 / vr.get_avg_fps() for i in range(0, 8, 2)]
    text = qwen3_target.tokenizer.decode(qwen3_inputs[0]["input_ids"][0])
    assert re.findall(r"<([\d.]+) seconds><\|vision_start\|>", text) == [f"{t:.1f}" for t in times]
    assert text.startswith(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n")
    drafter_own = qwen3_draft.prepare(video_messages(qwen3_draft, clips[0]))
    assert torch.equal(drafter_own["input_ids"], qwen3_inputs[0]["input_ids"])


def test_a_clip_shorter_than_max_num_frames(qwen3_target, tmp_path):
    """The built-in asks qwen_vl_utils for max_num_frames frames, whose frame rule refuses a shorter clip
    (and its fallback reader then fails as well); here the frame count drops to the largest even count
    the clip has."""
    from qwen_vl_utils.vision_process import smart_nframes

    from testbed.fixtures.video import make_clip

    short = str(make_clip(tmp_path / "short.mp4", seed=5, frames=5))
    with pytest.raises(ValueError, match="nframes should in interval"):
        smart_nframes(qwen3_target.builtin_video_kwargs(), total_frames=5, video_fps=8)
    assert qwen3_target.video_kwargs([short])["nframes"] == 4
    inputs = qwen3_target.prepare(video_messages(qwen3_target, short))
    assert inputs["video_grid_thw"].tolist() == [[2, 8, 8]]


def test_testbed_family_trains_on_what_evaluation_feeds(tiny_qwen3_target, tmp_path):
    """The testbed's qwen3_vl family (training prompts and video tensors) == the adapter's inputs for a
    testbed clip at the testbed's video settings: same ids (system turn, timestamps, 36 video tokens),
    same pixels after the H.264 round trip."""
    import numpy as np

    from testbed import clips
    from testbed import grammar as g
    from testbed.families import family
    from testbed.paths import VIDEO_ARGS

    fam = family("qwen3_vl")
    tok = fam.tokenizer()
    head, tail = fam.chat_scaffold(tok)
    seed = clips.split_seeds("test", 1)[0]
    clip = str(clips.write_clip(tmp_path / "clip.mp4", seed))
    adapter = Qwen3VLAdapter.load(tiny_qwen3_target, dtype="float32", **VIDEO_ARGS)
    inputs = adapter.prepare([{"role": "user", "content": [{"type": "video", "video": clip, **adapter.video_kwargs([clip])},
                                                            {"type": "text", "text": g.CAPTION_PROMPT}]}])
    assert inputs["input_ids"][0].tolist() == tok(head + g.CAPTION_PROMPT + tail, add_special_tokens=False)["input_ids"]
    assert int((inputs["input_ids"] == 151656).sum()) == fam.video_tokens == 36
    assert np.array_equal(fam.encode(clips.roundtrip(clips.render(seed)[0])), inputs["pixel_values_videos"].numpy())


# -- the model's own machinery -----------------------------------------------------------------------
def test_rope_delta_is_per_session_never_the_models(qwen3_target, qwen3_inputs):
    """A stale `model.model.rope_deltas` (left by generate, or by another sample) changes nothing; two
    samples decoded one after the other give what each gives alone."""
    fresh = [AR.decode(qwen3_target, None, inp, cfg(), seed=0).tokens for inp in qwen3_inputs[:2]]
    with torch.inference_mode():
        qwen3_target.model.generate(**qwen3_inputs[2], max_new_tokens=3, do_sample=False)
    assert qwen3_target.model.model.rope_deltas is not None  # generate cached one on the model
    qwen3_target.model.model.rope_deltas = torch.tensor([[1000]])
    assert [AR.decode(qwen3_target, None, inp, cfg(), seed=0).tokens for inp in reversed(qwen3_inputs[:2])] == fresh[::-1]
    session, _ = qwen3_target.start(qwen3_inputs[0])
    s = qwen3_inputs[0]["input_ids"].shape[1]
    pos, delta = qwen3_target.model.model.get_rope_index(
        qwen3_inputs[0]["input_ids"], mm_token_type_ids=qwen3_inputs[0]["mm_token_type_ids"],
        video_grid_thw=qwen3_inputs[0]["video_grid_thw"])
    assert session.offset == int(delta) == int(pos.max()) + 1 - s < 0  # 64 video tokens on 4 x 4 grids
    assert session.position_ids(2)[:, 0].tolist() == [[s + int(delta), s + int(delta) + 1]] * 3


def test_pruned_prefill_prunes_deepstack_with_the_video(qwen3_target, qwen3_inputs):
    """The pruned drafter's text model gets the visual position mask and every DeepStack layer's
    features cut to the kept rows, equal to the full prompt's features there; keeping every video
    token gives the full prefill's logits."""
    inp = qwen3_inputs[0]
    ids = inp["input_ids"]
    n_video = int((ids[0] == 151656).sum())
    keep = torch.tensor([0, 5, 17, 18, 40, 63])

    def start(inputs):
        """(prefill, the text model's visual_pos_masks, its deepstack_visual_embeds)"""
        seen = {}

        def hook(_module, _args, kwargs):
            seen.update(mask=kwargs["visual_pos_masks"], deepstack=kwargs["deepstack_visual_embeds"])

        handle = qwen3_target.model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            _, prefill = qwen3_target.start(inputs)
        finally:
            handle.remove()
        return prefill, seen["mask"], seen["deepstack"]

    full, full_mask, full_deepstack = start(inp)
    pruned, mask, deepstack = start({**inp, VIDEO_KEEP_KEY: keep})
    every, _, _ = start({**inp, VIDEO_KEEP_KEY: torch.arange(n_video)})
    n_layers = len(qwen3_target.model.config.vision_config.deepstack_visual_indexes)
    assert len(full_deepstack) == n_layers == 2 and int(full_mask.sum()) == n_video == 64
    assert pruned.video_tokens_fed == keep.numel()
    assert mask.shape == (1, ids.shape[1] - n_video + keep.numel()) and int(mask.sum()) == keep.numel()
    assert len(deepstack) == n_layers
    for pruned_layer, full_layer in zip(deepstack, full_deepstack):
        assert torch.equal(pruned_layer, full_layer[keep])
    assert torch.equal(every.logits, full.logits)


def test_moe_routing_needs_nothing_special(qwen3_moe_target, qwen3_target, qwen3_inputs):
    """Routing is per token: each token picks the same experts fed alone or inside a block, so block
    logits == step logits and a MoE drafter or target is lossless with no special handling."""
    model = qwen3_moe_target.model
    gates = [layer.mlp.gate for layer in model.model.language_model.layers]
    picks: list[list[torch.Tensor]] = [[] for _ in gates]
    tokens = AR.decode(qwen3_moe_target, None, qwen3_inputs[0], cfg(), seed=0).tokens[:8]
    handles = [g.register_forward_hook(lambda _m, _i, out, i=i: picks[i].append(out[2].clone()))
               for i, g in enumerate(gates)]
    try:
        session, _ = qwen3_moe_target.start(qwen3_inputs[0])
        for p in picks:
            p.clear()
        block = session.extend(torch.tensor(tokens))  # [8, V]
        block_picks = [p[0] for p in picks]  # [8, top_k] per layer
        for p in picks:
            p.clear()
        session, _ = qwen3_moe_target.start(qwen3_inputs[0])
        for p in picks:
            p.clear()
        steps = torch.stack([session.extend(torch.tensor([t]))[0] for t in tokens])
        step_picks = [torch.cat(p) for p in picks]
    finally:
        for h in handles:
            h.remove()
    for b, s in zip(block_picks, step_picks):
        assert torch.equal(b.sort(-1).values, s.sort(-1).values)
    assert len(torch.cat(block_picks).unique()) > 2  # several experts are in use
    assert torch.allclose(block, steps, atol=1e-4, rtol=1e-4)
    # the pairing the shared tests do not run: a dense target drafted by the MoE model
    ar = AR.decode(qwen3_target, None, qwen3_inputs[1], cfg(), seed=0)
    sd = SD.decode(qwen3_target, qwen3_moe_target, qwen3_inputs[1], cfg(), seed=0)
    assert sd.tokens == ar.tokens and sd.proposed > 0


@pytest.mark.parametrize("which", ["qwen3_target", "qwen3_moe_target"])
def test_sd_with_a_noisy_copy_drafter_is_lossless_and_accepts_part(which, request, qwen3_inputs):
    """A drafter with the target's weights plus 1% noise on its text model (dense and MoE): `sd` == `ar`
    and part of the drafts, not all and not none, are accepted."""
    target = request.getfixturevalue(which)
    noisy = Qwen3VLAdapter.load(target.name, dtype="float32", **QWEN3_VL_VIDEO_ARGS)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in noisy.model.model.language_model.parameters():
            if p.numel() > 1 and float(p.std()) > 0:
                p.add_(torch.randn(p.shape, generator=gen) * 0.01 * p.std())
    accepted = proposed = 0
    for inp in qwen3_inputs:
        ar = AR.decode(target, None, inp, cfg(), seed=0)
        sd = SD.decode(target, noisy, inp, cfg(), seed=0)
        assert sd.tokens == ar.tokens
        accepted, proposed = accepted + sd.accepted, proposed + sd.proposed
    assert 0.1 * proposed < accepted < 0.9 * proposed


def test_attention_probe_reads_queries_through_q_norm(qwen3_target, qwen3_inputs, monkeypatch):
    """Qwen3 attention normalises q per head (q_norm, weights != 1 in the fixture) before rotary; the
    probes' `layer_queries` applies it (keys come from the cache, already k-normed): without it the
    probe reads other attention (probe == eager attention weights is checked in test_pruning.py for
    both Qwen3-VL pairs)."""
    inp = qwen3_inputs[0]
    attn = qwen3_target.decoder_layers()[-1].self_attn
    assert not torch.allclose(attn.q_norm.weight, torch.ones_like(attn.q_norm.weight))
    _, pre = qwen3_target.start(inp, attention_layer=-1)
    with_q_norm = pre.video_attention  # the probe computes on first read: read it before the patch
    real = probes.layer_queries

    def without_q_norm(module, hidden, cos, sin):
        norm = module.q_norm
        try:
            module.q_norm = None
            return real(module, hidden, cos, sin)
        finally:
            module.q_norm = norm

    monkeypatch.setattr(probes, "layer_queries", without_q_norm)
    _, plain = qwen3_target.start(inp, attention_layer=-1)
    assert not torch.allclose(with_q_norm, plain.video_attention, atol=1e-3)


# -- bad inputs: refused before any weights load, or recorded --------------------------------------
@pytest.fixture()
def no_weights(monkeypatch):
    import lvspec_eval.adapters.qwen3_vl as mod

    def refuse(*_a, **_k):
        raise AssertionError("weights were loaded before the refusal")

    monkeypatch.setattr(mod, "load_pretrained", refuse)


def _copy_with(src: str, dst: Path, **config_changes) -> str:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    for key, value in config_changes.items():
        section, _, name = key.partition("__")
        (config[section] if name else config)[name or section] = value
    (dst / "config.json").write_text(json.dumps(config))
    return str(dst)


@pytest.mark.parametrize("role", ["target", "drafter"])
def test_qwen3_5_is_refused_before_loading(role, tmp_path, tiny_qwen3_target, no_weights):
    from testbed.fixtures.tiny_qwen3 import write_qwen3_5_checkpoint

    q35 = str(write_qwen3_5_checkpoint(tmp_path / "qwen3_5"))
    pair = {"pretrained": q35, "draft_pretrained": tiny_qwen3_target} if role == "target" else \
        {"pretrained": tiny_qwen3_target, "draft_pretrained": q35}
    with pytest.raises(UnsupportedCheckpointError, match=rf"{role} checkpoint .* is a Qwen3.5 model .*linear "
                                                          r"attention.*cannot roll back"):
        backend_class()(method="sd", device_map="cpu", stats_path=str(tmp_path / "r.jsonl"), **pair)


@pytest.mark.parametrize("other", ["tiny_draft", "tiny_llava_draft"])
def test_a_drafter_of_another_family_is_refused(other, request, tmp_path, tiny_qwen3_target, no_weights):
    drafter = request.getfixturevalue(other)
    with pytest.raises(UnsupportedCheckpointError, match=r"drafter checkpoint .* is a '(qwen2_5_vl|llava_onevision)' "
                                                         r"model, not Qwen3-VL.*use lvspec_qwen"):
        backend_class()(pretrained=tiny_qwen3_target, draft_pretrained=drafter, method="sd", device_map="cpu",
                        stats_path=str(tmp_path / "r.jsonl"))


def test_a_drafter_that_reads_video_differently_is_refused(tmp_path, tiny_qwen3_target, tiny_qwen3_draft, no_weights):
    drafter = _copy_with(tiny_qwen3_draft, tmp_path / "patch14", vision_config__patch_size=14)
    with pytest.raises(UnsupportedCheckpointError, match=r"reads video differently .*vision patch_size 16 vs 14"):
        backend_class()(pretrained=tiny_qwen3_target, draft_pretrained=drafter, method="lvspec", device_map="cpu",
                        stats_path=str(tmp_path / "r.jsonl"))


def test_a_drafter_with_another_tokenizer_is_refused(tmp_path, tiny_qwen3_target, tiny_qwen3_draft, tiny_target,
                                                      no_weights):
    """A Qwen3-VL drafter carrying the Qwen2.5 tokenizer (4 tokens fewer)."""
    drafter = shutil.copytree(tiny_qwen3_draft, tmp_path / "qwen25_tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_target) / name, drafter / name)
    with pytest.raises(TokenizerMismatchError, match=r"vocabularies differ \(151669 vs 151665 tokens; first at id "
                                                     r"151665: '<tool_response>' vs None\)"):
        backend_class()(pretrained=tiny_qwen3_target, draft_pretrained=str(drafter), method="sd", device_map="cpu",
                        stats_path=str(tmp_path / "r.jsonl"))


def test_an_image_request_gets_a_failed_record(ours, clips, tmp_path):
    """An image where a video is expected: refused before decoding, recorded, the run goes on."""
    from PIL import Image

    image = Image.new("RGB", (64, 64), "red")
    docs = {0: {"msgs": lambda: [{"role": "user", "content": [{"type": "image", "url": image},
                                                              {"type": "text", "text": "What colour?"}]}]},
            1: {"msgs": lambda: lmms_messages(clips[0])}}
    ours.task_dict = {"img": {"test": docs}}
    requests = [request(lambda doc: doc["msgs"](), {"max_new_tokens": 5}, i, "img") for i in (0, 1)]
    results = ours.generate_until(requests)
    records = {r["doc_id"]: r for r in read_records(ours.stats_path) if r["task"] == "img"}
    assert results[0].text == "" and "image" in records[0]["error"] and "lmms-eval's qwen3_vl" in records[0]["error"]
    assert "tokens" not in records[0] and records[1]["new_tokens"] == 5 and not records[1].get("error")
    assert records[1]["family"] == "qwen3_vl" and records[1]["until"] == []


# -- the real CLI ----------------------------------------------------------------------------------
PIXELS = ",".join(f"{k}={v}" for k, v in QWEN3_VL_VIDEO_ARGS.items())


@pytest.fixture(scope="module")
def until_task(tmp_path_factory):
    """The tiny caption task with stop strings the outputs contain and no max_new_tokens (the backends'
    default, 128), so that the built-in's stop semantics (EOS only) are exercised."""
    from testbed.fixtures.cli import TINY_TASK, copy_tiny_task, task_variant

    clips_dir = copy_tiny_task(tmp_path_factory.mktemp("tiny") / "lvspec_tiny") / "videos"
    docs = [{"id": f"q{i}", "video": f"clip_{i}.mp4", "question": "Describe the video.", "answer": "x"}
            for i in range(3)]
    name = "lvspec_q3_until"
    assert name != TINY_TASK
    return task_variant(tmp_path_factory.mktemp("tasks") / name, name, docs, clips_dir,
                        {"temperature": 0, "do_sample": False, "until": ["e", "\n\n", " "]})


@pytest.mark.slow
@pytest.mark.parametrize("ckpt", ["tiny_qwen3_target", "tiny_qwen3_moe_target"])
def test_ar_matches_builtin_qwen3_vl(ckpt, request, tmp_path, until_task):
    """`method=ar` == lmms-eval's `qwen3_vl` through the real CLI, same checkpoint and task, both at
    their default dtype (bfloat16), dense and MoE (the built-in finds MoE by the "A1B" in the path)."""
    from testbed.fixtures.cli import outputs, response, run_cli

    path = request.getfixturevalue(ckpt)
    task = "lvspec_q3_until"
    ours = run_cli("lvspec_qwen3_vl", f"pretrained={path},method=ar,device_map=cpu,{PIXELS},"
                                      f"stats_path={tmp_path / 'ar.jsonl'}", until_task, tmp_path / "ours", tasks=task)
    theirs = run_cli("qwen3_vl", f"pretrained={path},device_map=cpu,{PIXELS}", until_task, tmp_path / "theirs",
                     tasks=task)
    _, ours_samples = outputs(tmp_path / "ours", task)
    _, their_samples = outputs(tmp_path / "theirs", task)
    assert len(ours_samples) == len(their_samples) == 3, ours.stderr[-2000:] + theirs.stderr[-2000:]
    records = read_records(tmp_path / "ar.jsonl")
    for a, b in zip(ours_samples, their_samples):
        assert a["doc_id"] == b["doc_id"]
        assert response(a) and response(a) == response(b)
        assert "e" in response(a)  # a stop string the built-in ignores, and so do we
    assert all(r["family"] == "qwen3_vl" and r["dtype"] == "bfloat16" and r["until"] == [] for r in records)
    assert all(r["max_new_tokens"] == 128 and (r["new_tokens"] == 128 or r["stop_reason"] == "eos") for r in records)


@pytest.mark.slow
def test_videomme_task_code_runs(tmp_path, trained_checkpoints, clips):
    """lmms-eval's own `videomme` (prompt, answer extraction, scoring) on local clips: `sd` through
    `lvspec_qwen3_vl` (lossless, paired with `ar`) gives the built-in qwen3_vl's answers: lmms-eval builds
    the task for `--model lvspec_qwen3_vl` (its `default` prompt), and the backend asks the task for the
    prompt of the built-in it mirrors (the YAML's `qwen3_vl` entry; lvspec_eval/lmms/task_prompts.py).

    Both backends decode in bfloat16 (the built-in's fixed dtype), where a verify block's logits differ from
    one-token steps by up to ~0.16 here. A random tiny model ties its top two logits in bfloat16 within that
    (gaps of 0.0 and 0.0625 were measured on these prompts), so its greedy path is a coin flip between the
    two; the trained testbed pair answers with top-2 gaps of 1.25 and more on these prompts."""
    from testbed.fixtures.cli import outputs, response, run_cli
    from testbed.fixtures.videomme import videomme_task

    target, draft = trained_checkpoints["qwen3_target"], trained_checkpoints["qwen3_drafter"]
    hf_home = tmp_path / "hf_home"
    name = "lvspec_videomme_q3"
    task = videomme_task(tmp_path / "tasks" / name, hf_home, clips[:2], name=name)
    env = {"HF_HOME": str(hf_home)}
    stats = tmp_path / "sd.jsonl"
    ours = run_cli("lvspec_qwen3_vl", f"pretrained={target},draft_pretrained={draft},method=sd,"
                                      f"num_draft_tokens=4,device_map=cpu,{PIXELS},paired_baseline=true,"
                                      f"stats_path={stats}", task.parent, tmp_path / "ours", tasks=name, env=env,
                   env_read_by_the_task=True)
    theirs = run_cli("qwen3_vl", f"pretrained={target},device_map=cpu,{PIXELS}", task.parent,
                     tmp_path / "theirs", tasks=name, env=env, env_read_by_the_task=True)
    ours_results, ours_samples = outputs(tmp_path / "ours", name)
    their_results, their_samples = outputs(tmp_path / "theirs", name)
    assert len(ours_samples) == len(their_samples) == 2, ours.stderr[-2000:] + theirs.stderr[-2000:]
    for a, b in zip(ours_samples, their_samples):
        assert response(a) == response(b)
        # the built-in got the task's qwen3_vl prompt; lmms-eval logs ours as the default one (the task was
        # built for --model lvspec_qwen3_vl), though the backend decoded the qwen3_vl prompt (same answers)
        assert b["input"].startswith("Question: ") and b["input"].endswith("\nAnswer with the option letter only.")
        assert not a["input"].startswith("Question: ")
    score = "videomme_perception_score,none"
    assert ours_results["results"][name][score] == their_results["results"][name][score]
    records = read_records(stats)
    assert len(records) == 2 and all(r["exact_match_ar"] is True and r["method"] == "sd" for r in records)
