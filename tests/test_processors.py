"""The logits processors of HF generate's greedy path (lvspec_eval/engine/processors.py, docs/greedy.md).

Real Qwen2.5-VL Instruct checkpoints ship repetition_penalty 1.05 in generation_config.json, which
lmms-eval's built-ins apply (through `generate`) and a plain argmax does not. Here: our processor
lists against transformers' own (captured from a real `generate` call) on random logits and prefixes;
the refusals; `ar` == `generate` called as each built-in calls it, and the lossless methods == `ar`,
under the penalty, for both families; nothing runs when no processor is active."""

import pytest
import torch

from conftest import LLAVA_VIDEO_ARGS, VIDEO_ARGS, method, video_messages
from lvspec_eval.config import LLAVA_HF_BUILTIN, QWEN2_5_VL_BUILTIN, ArgsError, DecodeConfig
from lvspec_eval.engine import processors as proc_mod
from lvspec_eval.engine.processors import (ContextProcessors, GenerationConfigError, greedy_processing,
                                           merged_generation_config)
from testbed.fixtures.scripted import ScriptedDrafter

EOS = 151645
QWEN_KW = QWEN2_5_VL_BUILTIN.generate_kwargs({}, 8, EOS, 151643)
LLAVA_KW = LLAVA_HF_BUILTIN.generate_kwargs({}, 8, EOS, 151643)


# -- (d) our list == transformers' own, on random logits and prefixes ------------------------------------------

@pytest.fixture(scope="module")
def hf_model(tiny_target):
    """A tiny Qwen2.5-VL of its own (the tests set its generation config)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_target, dtype=torch.float32).eval()


def hf_processors(model, monkeypatch, prompt: torch.Tensor, kwargs: dict):
    """The LogitsProcessorList that `model.generate(input_ids=prompt, **kwargs)` builds (captured)."""
    captured = []
    original = type(model)._get_logits_processor

    def spy(self, *args, **kw):
        captured.append(original(self, *args, **kw))
        return captured[-1]

    with monkeypatch.context() as patch, torch.inference_mode():
        patch.setattr(type(model), "_get_logits_processor", spy)
        model.generate(input_ids=prompt.view(1, -1), attention_mask=torch.ones(1, prompt.numel(), dtype=torch.long),
                       **kwargs)
    (processors,) = captured
    return processors


def _watermark():
    from transformers import WatermarkingConfig

    return WatermarkingConfig(bias=3.0, context_width=2)


S, NEW = 6, 8  # prompt length; max_new_tokens (ForcedEOS fires at the last one)
CONFIGS = {
    "qwen_instruct": dict(do_sample=True, repetition_penalty=1.05, temperature=0.1, top_p=0.001, top_k=1,
                          eos_token_id=[151645, 151643]),
    "everything": dict(sequence_bias={(5, 7): 2.0, (11,): -3.0}, encoder_repetition_penalty=1.2,
                       repetition_penalty=1.3, no_repeat_ngram_size=2, encoder_no_repeat_ngram_size=3,
                       bad_words_ids=[[13], [17, 19]], min_new_tokens=3, forced_eos_token_id=EOS,
                       remove_invalid_values=True, exponential_decay_length_penalty=(2, 1.1), suppress_tokens=[23, 29],
                       begin_suppress_tokens=[31, EOS], renormalize_logits=True),
    "lengths": dict(min_length=S + 4, forced_bos_token_id=3, begin_suppress_tokens=[7], repetition_penalty=0.8,
                    watermarking_config="green-list"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("kwargs", [QWEN_KW, LLAVA_KW], ids=["qwen2_5_vl", "llava_hf"])
def test_processors_equal_transformers_own_on_random_logits_and_prefixes(hf_model, monkeypatch, name, kwargs):
    from transformers import GenerationConfig

    settings = dict(CONFIGS[name])
    if settings.get("watermarking_config"):
        settings["watermarking_config"] = _watermark()
    monkeypatch.setattr(hf_model, "generation_config", GenerationConfig(**settings))
    gen = torch.Generator().manual_seed(len(name))
    vocab = hf_model.config.get_text_config().vocab_size
    pool = torch.tensor([5, 7, 11, 13, 17, 19, 23, 29, 31, 3, EOS, 100, 200, 300])  # ids the settings name
    prompt = pool[torch.randint(len(pool), (S,), generator=gen)]
    theirs = hf_processors(hf_model, monkeypatch, prompt, kwargs)
    processing = greedy_processing(hf_model, kwargs)
    assert processing is not None and processing.names == tuple(type(p).__name__ for p in theirs)
    ours = processing.bind(prompt, NEW)
    assert [type(p) for p in ours.processors] == [type(p) for p in theirs]
    for trial in range(12):  # every generated length 0..NEW-1, prefixes with repeats of the named ids
        n_emitted, k = trial % NEW, 1 + trial % 4
        tail = pool[torch.randint(len(pool), (n_emitted + k - 1,), generator=gen)].tolist()
        emitted, drafts = tail[:n_emitted], tail[n_emitted:]
        logits = torch.randn(k, vocab, generator=gen) * 4  # [k, V]
        got = ours(logits, emitted, drafts)  # [k, V]
        for j in range(k):  # row j follows prompt + emitted + drafts[:j]
            ids = torch.tensor(prompt.tolist() + emitted + drafts[:j]).view(1, -1)
            want = theirs(ids, logits[j:j + 1].clone())
            torch.testing.assert_close(got[j:j + 1], want, rtol=0, atol=0)
    if name != "qwen_instruct":  # the settings act: not a plain copy of the logits
        assert not torch.equal(ours(logits, emitted, drafts), logits)


def test_merged_config_is_generates_on_every_setting_the_greedy_path_reads(hf_model, monkeypatch):
    """Equal to generate's own merge, except transformers' global defaults, which turn no processor on."""
    from transformers import GenerationConfig

    monkeypatch.setattr(hf_model, "generation_config", GenerationConfig(**CONFIGS["qwen_instruct"]))
    for kwargs in (QWEN_KW, LLAVA_KW):
        ours = merged_generation_config(hf_model.generation_config, kwargs).to_dict()
        theirs = hf_model._prepare_generation_config(None, **kwargs)[0].to_dict()
        differ = {k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)}
        assert ours["repetition_penalty"] == 1.05 and ours["do_sample"] is False and ours["eos_token_id"] == EOS
        defaults = GenerationConfig._get_default_generation_params()
        assert differ and all(ours.get(k) is None and theirs[k] == defaults[k] for k in differ), differ


def test_nothing_runs_without_an_active_processor(qwen_target, qwen_inputs, monkeypatch):
    """The tiny test checkpoints turn no processor on: no processing object, no call, the plain argmax path."""
    for builtin in (QWEN2_5_VL_BUILTIN, LLAVA_HF_BUILTIN):
        assert greedy_processing(qwen_target.model, builtin.generate_kwargs({}, 16, EOS, 151643)) is None
    calls = []
    monkeypatch.setattr(ContextProcessors, "__call__", lambda self, *a: calls.append(a))
    cfg = DecodeConfig(max_new_tokens=12, eos_ids=(EOS,), num_draft_tokens=3)
    method("sd").decode(qwen_target, qwen_target, qwen_inputs[0], cfg, seed=0)
    assert calls == [] and proc_mod.bind(cfg.processing, qwen_inputs[0]["input_ids"][0], 12) is None


# -- (c) refusals ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings,kwargs,words", [
    (dict(guidance_scale=1.5), QWEN_KW, ["guidance_scale=1.5", "checkpoint's generation_config.json",
                                         "second, unconditional forward", "remove it"]),
    (dict(stop_strings=["END"]), QWEN_KW, ["stop_strings=['END']", "passes no tokenizer"]),
    (dict(max_time=5.0), LLAVA_KW, ["max_time=5.0", "wall-clock"]),
    (dict(), {**QWEN_KW, "num_beams": 3}, ["beam_search", "num_beams=3 (from the built-in backend's generate call",
                                            "set num_beams: 1"]),
    (dict(penalty_alpha=0.6), LLAVA_KW, ["contrastive_search", "penalty_alpha=0.6 (from the checkpoint's"]),
    (dict(dola_layers="high"), QWEN_KW, ["dola_generation", "dola_layers='high'"]),
    (dict(prompt_lookup_num_tokens=3), QWEN_KW, ["assisted_generation", "prompt_lookup_num_tokens=3"]),
])
def test_refusals_name_the_setting_and_the_fix(hf_model, monkeypatch, settings, kwargs, words):
    from transformers import GenerationConfig

    monkeypatch.setattr(hf_model, "generation_config", GenerationConfig(eos_token_id=EOS, **settings))
    with pytest.raises(GenerationConfigError) as err:
        greedy_processing(hf_model, kwargs)
    assert isinstance(err.value, ArgsError)  # the backend records it per request, as a refused sampling request
    for word in words:
        assert word in str(err.value), str(err.value)


def test_synthid_watermark_is_refused(hf_model, monkeypatch):
    from transformers import GenerationConfig, SynthIDTextWatermarkingConfig

    wm = SynthIDTextWatermarkingConfig(ngram_len=3, keys=[7, 11, 13])
    monkeypatch.setattr(hf_model, "generation_config", GenerationConfig(eos_token_id=EOS, watermarking_config=wm))
    with pytest.raises(GenerationConfigError, match="watermarking_config=.*keeps state from call to call"):
        greedy_processing(hf_model, QWEN_KW)


@pytest.mark.parametrize("kwargs", [QWEN_KW, LLAVA_KW], ids=["qwen2_5_vl", "llava_hf"])
def test_the_mode_is_generates_own(hf_model, monkeypatch, kwargs):
    """penalty_alpha turns generate to contrastive search unless top_k <= 1: the chat qwen2_5_vl passes top_k=None
    (greedy), llava_hf passes no top_k (transformers' default 50: contrastive)."""
    from transformers import GenerationConfig

    monkeypatch.setattr(hf_model, "generation_config", GenerationConfig(eos_token_id=EOS, penalty_alpha=0.6))
    mode = hf_model._prepare_generation_config(None, **kwargs)[0].get_generation_mode()
    if mode == "greedy_search":
        assert greedy_processing(hf_model, kwargs) is None
    else:
        with pytest.raises(GenerationConfigError, match=mode.value):
            greedy_processing(hf_model, kwargs)
    assert (mode == "greedy_search") == (kwargs is QWEN_KW)


# -- (a) ar == generate as the built-in calls it, lossless methods == ar, under the penalty, both families --------

PENALTY_CKPT = {"qwen2_5_vl": "tiny_penalty_target", "llava_onevision": "tiny_llava_penalty_target"}
N = 40
#: beside the checkpoint's own repetition_penalty 1.05: settings whose effect depends strongly on each row's exact
#: prefix (a banned trigram, a penalty that flips more choices) and position (EOS forced at the last new token)
SETTINGS = {"checkpoint": {}, "prefix_sensitive": dict(repetition_penalty=1.3, no_repeat_ngram_size=3,
                                                       forced_eos_token_id=EOS)}


@pytest.fixture(scope="module", params=list(PENALTY_CKPT))
def fam(request) -> str:
    return request.param


@pytest.fixture(scope="module", params=list(SETTINGS))
def setting(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def pen_target(fam, setting, request):
    from lvspec_eval.adapters.llava_onevision import LlavaOnevisionAdapter
    from lvspec_eval.adapters.qwen2_5_vl import QwenVLAdapter

    path = request.getfixturevalue(PENALTY_CKPT[fam])
    if fam == "qwen2_5_vl":
        adapter = QwenVLAdapter.load(path, dtype="float32", device_map="cpu", **VIDEO_ARGS)
    else:
        adapter = LlavaOnevisionAdapter.load(path, dtype="float32", device_map="cpu", **LLAVA_VIDEO_ARGS)
    adapter.model.generation_config.update(**SETTINGS[setting])
    return adapter


@pytest.fixture(scope="module")
def pen_draft(fam, request):
    return request.getfixturevalue({"qwen2_5_vl": "qwen_draft", "llava_onevision": "llava_draft"}[fam])


@pytest.fixture(scope="module")
def pen_inputs(pen_target, clips):
    return [pen_target.prepare(video_messages(pen_target, c)) for c in clips]


def builtin_call(fam: str, tok, n: int) -> dict:
    """The kwargs lmms-eval's built-in passes to model.generate at temperature 0 (written out from its source:
    models/chat/qwen2_5_vl.py, models/simple/llava_hf.py)."""
    if fam == "qwen2_5_vl":
        return dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=False, temperature=None,
                    top_p=None, num_beams=1, max_new_tokens=n, top_k=None, use_cache=True)
    return dict(do_sample=False, temperature=None, top_p=None, num_beams=1, max_new_tokens=n, use_cache=True,
                pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)


def pen_cfg(fam: str, target, k: int = 5, n: int = N) -> DecodeConfig:
    tok = target.tokenizer
    builtin = {"qwen2_5_vl": QWEN2_5_VL_BUILTIN, "llava_onevision": LLAVA_HF_BUILTIN}[fam]
    processing = greedy_processing(target.model, builtin.generate_kwargs({}, n, tok.eos_token_id, tok.pad_token_id))
    return DecodeConfig(max_new_tokens=n, eos_ids=(tok.eos_token_id,), num_draft_tokens=k, processing=processing)


@pytest.fixture(scope="module")
def pen_ar(fam, pen_target, pen_inputs):
    return [method("ar").decode(pen_target, None, inp, pen_cfg(fam, pen_target), seed=0) for inp in pen_inputs]


def test_the_processors_are_on_and_change_every_answer(fam, setting, pen_target, pen_inputs, pen_ar):
    cfg = pen_cfg(fam, pen_target)
    assert cfg.processing.names == {"checkpoint": ("RepetitionPenaltyLogitsProcessor",), "prefix_sensitive": (
        "RepetitionPenaltyLogitsProcessor", "NoRepeatNGramLogitsProcessor", "ForcedEOSTokenLogitsProcessor")}[setting]
    plain = DecodeConfig(max_new_tokens=N, eos_ids=cfg.eos_ids)
    for inp, ar in zip(pen_inputs, pen_ar):
        assert method("ar").decode(pen_target, None, inp, plain, seed=0).tokens != ar.tokens


def test_ar_equals_generate_called_as_the_builtin_calls_it(fam, setting, pen_target, pen_inputs, pen_ar):
    for inp, ar in zip(pen_inputs, pen_ar):
        with torch.inference_mode():
            out = pen_target.model.generate(**inp, **builtin_call(fam, pen_target.tokenizer, N))
        assert out[0, inp["input_ids"].shape[1]:].tolist() == ar.tokens
        assert len(ar.tokens) == N and (ar.tokens[-1] == EOS) == ("forced_eos_token_id" in SETTINGS[setting])


@pytest.mark.parametrize("k", [1, 4, 10])
def test_sd_identical_drafter_accepts_everything_under_the_penalty(fam, pen_target, pen_inputs, pen_ar, k):
    """The drafter's argmax runs the same processors with its own context: an identical drafter proposes
    exactly the target's tokens, so every full round accepts all K."""
    for inp, ar in zip(pen_inputs, pen_ar):
        r = method("sd").decode(pen_target, pen_target, inp, pen_cfg(fam, pen_target, k), seed=0)
        assert r.tokens == ar.tokens
        full_rounds = (N - 1) // (k + 1)
        assert r.provenance.startswith("P" + ("E" * k + "B") * full_rounds)


def test_sd_random_and_pruned_drafters_are_lossless_under_the_penalty(fam, pen_target, pen_draft, pen_inputs, pen_ar):
    for inp, ar in zip(pen_inputs, pen_ar):
        assert method("sd").decode(pen_target, pen_draft, inp, pen_cfg(fam, pen_target), seed=0).tokens == ar.tokens
        specvlm = method("specvlm").decode(pen_target, pen_target, inp, pen_cfg(fam, pen_target), seed=0)
        assert specvlm.tokens == ar.tokens


@pytest.mark.parametrize("k,wrong", [(4, {1, 2, 7, 8, 9, 20, 21, 33}), (3, set(range(1, 40, 2)))])
def test_sd_scripted_drafter_is_lossless_under_the_penalty(fam, pen_target, pen_inputs, pen_ar, k, wrong):
    """Wrong proposals inside a block: the verify rows after them are scored with the drafted prefix, which
    the rule then rejects; the accepted rows' prefixes equal what ar saw."""
    for inp, ar in zip(pen_inputs, pen_ar):
        drafter = ScriptedDrafter(ar.tokens, wrong, vocab_size=pen_target.vocab_size)
        r = method("sd").decode(pen_target, drafter, inp, pen_cfg(fam, pen_target, k), seed=0)
        assert r.tokens == ar.tokens and r.accepted_exact == r.accepted > 0
