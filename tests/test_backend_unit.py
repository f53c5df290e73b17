"""Backend glue without models: generation kwargs, until cutting, per-sample seeds, stats path."""

from types import SimpleNamespace

import pytest
from tokenizers import AddedToken

from lvspec_eval.config import ArgsError, LVSpecArgs
from lvspec_eval.adapters.loading import TokenizerMismatchError, check_same_tokenizer, tokenizer_differences
from lvspec_eval.engine import build_method
from lvspec_eval.lmms.backend import (LVSpecBackend, ar_first, asks_for_sampling, cut_at_until, default_stats_path,
                                     effective_until, sample_seed)
from lvspec_eval.lmms.llava_ov import LVSpecLlavaOV
from lvspec_eval.lmms.qwen import LVSpecQwen


class _Tok:
    eos_token_id = 151645
    pad_token_id = 151643
    all_special_ids = [151645, 151643]
    added_tokens_decoder = {151643: AddedToken("<|endoftext|>", special=True),
                            151652: AddedToken("<|vision_start|>", special=True),
                            151657: AddedToken("<tool_call>", special=False)}


class _Model:
    """What `greedy_processing` reads of a model: its generation config and its text config's vocab size."""

    def __init__(self, **generation):
        from transformers import GenerationConfig

        self.generation_config = GenerationConfig(bos_token_id=151643, eos_token_id=[151645, 151643], **generation)
        self.config = SimpleNamespace(get_text_config=lambda: SimpleNamespace(vocab_size=151936))


class _Adapter:
    tokenizer = _Tok()

    def __init__(self, **generation):
        self.model = _Model(**generation)


def backend(cls=LVSpecBackend, generation=None, **args):
    b = object.__new__(cls)  # glue only: no model loading
    b.method = build_method(LVSpecArgs(**args))
    b.target = _Adapter(**(generation or {}))
    return b


def test_generation_kwargs_are_honoured():
    cfg = backend(num_draft_tokens=4)._decode_config({"max_new_tokens": 7, "until": ["\n\n", "Q:"], "temperature": 0})
    assert cfg.max_new_tokens == 7 and cfg.eos_ids == (151645,)
    assert cfg.num_draft_tokens == 4
    # every rule verifies these strictly: the tokenizer's special ids and its added tokens marked special
    assert cfg.special_ids == (151643, 151645, 151652)


GEN = {"until": ["\n\n", "Q:"], "temperature": 0, "do_sample": False}


def test_lvspec_qwen_stops_as_the_chat_qwen2_5_vl():
    """The chat qwen2_5_vl never reads `until` (not even its type); max_new_tokens 128 by default."""
    b = backend(LVSpecQwen)
    assert b._decode_config(GEN).until == ()
    assert b._decode_config({"until": 42}).until == ()
    assert b._decode_config({}).max_new_tokens == 128


def test_lvspec_llava_ov_stops_as_llava_hf():
    """The simple llava_hf pops `until` (a string or a list, else ValueError) and never uses it; 1024 by default."""
    b = backend(LVSpecLlavaOV)
    assert b._decode_config(GEN).until == () and b._decode_config({"until": "STOP"}).until == ()
    assert b._decode_config({}).max_new_tokens == 1024
    for bad in (42, None, ("a",), ["a", 3]):
        with pytest.raises(ArgsError, match="is not a string or a list of strings .*llava_hf.*refuses it too"):
            b._decode_config({"until": bad})


@pytest.mark.parametrize("policy,expected", [("ignore", ()), ("drop", ()), ("honour", ("\n\n", "Q:")),
                                             ("honour_except_blank_line", ("Q:",))])
def test_until_policy_model_arg_overrides_the_family(policy, expected):
    for cls in (LVSpecQwen, LVSpecLlavaOV):
        assert backend(cls, until_policy=policy)._decode_config(GEN).until == expected
    assert backend(until_policy="honour")._decode_config({"until": "STOP"}).until == ("STOP",)
    assert backend(until_policy="honour")._decode_config({}).until == ()


def test_effective_until_never_reads_until_when_ignoring():
    assert effective_until({"until": object()}, "ignore") == ()
    with pytest.raises(ArgsError, match="until=3 \\(int\\)"):
        effective_until({"until": 3}, "honour")


@pytest.mark.parametrize("kwargs", [{"temperature": 0.7}, {"temperature": 1, "do_sample": False}, {"temperature": "hot"}])
def test_sampling_is_refused_with_the_fix(kwargs):
    with pytest.raises(ArgsError, match="greedily only.*temperature: 0"):
        backend()._decode_config(kwargs)


@pytest.mark.parametrize("kwargs", [{"do_sample": True}, {"do_sample": True, "temperature": 0}, {"temperature": None}])
def test_do_sample_at_temperature_0_is_greedy_as_in_the_builtins(kwargs):
    """lmms-eval's qwen2_5_vl and llava_hf sample only when temperature > 0, whatever do_sample says."""
    assert asks_for_sampling(kwargs) is None
    assert backend()._decode_config(kwargs).max_new_tokens == 128


def test_cut_at_until_takes_the_earliest():
    assert cut_at_until("a red ball\n\nQ: next", ("Q:", "\n\n")) == "a red ball"
    assert cut_at_until("no stop here", ("\n\n",)) == "no stop here"
    assert cut_at_until("x", ("",)) == "x"


def test_sample_seed_is_order_independent_and_seed_dependent():
    assert sample_seed(0, "t", "test", 3) == sample_seed(0, "t", "test", 3)
    assert sample_seed(0, "t", "test", 3) != sample_seed(1, "t", "test", 3)
    assert sample_seed(0, "t", "test", 3) != sample_seed(0, "t", "test", 4)


def test_default_stats_path():
    p = default_stats_path("lvspec")
    assert p.parent.name == "lvspec_runs" and p.name.endswith("_lvspec.jsonl")
    assert default_stats_path("sd", rank=1, world_size=2).name.endswith("_sd_rank1.jsonl")


@pytest.mark.parametrize("value", [0, -3])
def test_max_new_tokens_below_one_is_refused_with_the_fix(value):
    with pytest.raises(ArgsError, match=f"max_new_tokens={value}: at least one new token.*--gen_kwargs max_new_tokens"):
        backend()._decode_config({"max_new_tokens": value})
    assert backend()._decode_config({"max_new_tokens": None}).max_new_tokens == 128
    assert backend()._decode_config({"max_new_tokens": 1}).max_new_tokens == 1


class _FakeTok:
    def __init__(self, vocab, eos="<|im_end|>", special=("<|im_end|>", "<|endoftext|>")):
        self.vocab, self.eos_token, self.all_special_tokens = dict(vocab), eos, list(special)
        self.bos_token, self.pad_token, self.unk_token = None, "<|endoftext|>", None

    def get_vocab(self):
        return dict(self.vocab)


VOCAB = {"a": 0, "b": 1, "<|endoftext|>": 2, "<|im_end|>": 3}


def test_tokenizer_differences_name_what_differs():
    assert tokenizer_differences(_FakeTok(VOCAB), _FakeTok(VOCAB)) == []
    diffs = tokenizer_differences(_FakeTok(VOCAB), _FakeTok({**VOCAB, "b2": 1} | {"b": 4}))
    assert diffs == ["vocabularies differ (4 vs 5 tokens; first at id 1: 'b' vs 'b2')"]
    diffs = tokenizer_differences(_FakeTok(VOCAB), _FakeTok(VOCAB, eos="<|endoftext|>", special=("<|endoftext|>",)))
    assert diffs == ["eos_token '<|im_end|>' vs '<|endoftext|>'", "special tokens differ: ['<|im_end|>'] vs []"]
    with pytest.raises(TokenizerMismatchError, match="use different tokenizers: .*eos_token.*pick a drafter"):
        check_same_tokenizer(_FakeTok(VOCAB), _FakeTok(VOCAB, eos="<|endoftext|>"), "T", "D")


def test_paired_order_alternates_by_doc_index_within_each_process():
    assert [ar_first(i) for i in range(6)] == [False, True, False, True, False, True]
    # two processes: rank 0 gets docs 0, 2, 4, 6; rank 1 gets 1, 3, 5, 7 (lmms-eval deals them in turn)
    assert [ar_first(i, world_size=2) for i in (0, 2, 4, 6)] == [False, True, False, True]
    assert [ar_first(i, world_size=2) for i in (1, 3, 5, 7)] == [False, True, False, True]
    assert ar_first("doc-a") == ar_first("doc-a") and {ar_first(f"doc-{i}") for i in range(20)} == {False, True}


# -- the logits processors of the built-in's generate (lvspec_eval/engine/processors.py) -------------------------

@pytest.mark.parametrize("cls", [LVSpecQwen, LVSpecLlavaOV])
def test_each_request_carries_the_checkpoints_greedy_processors(cls):
    """The checkpoint's repetition_penalty (real Qwen2.5-VL Instruct: 1.05) travels to the decode; a checkpoint
    without one gives no processing at all (the plain-argmax path)."""
    qwen_instruct = dict(do_sample=True, repetition_penalty=1.05, temperature=0.1, top_p=0.001, top_k=1)
    cfg = backend(cls, generation=qwen_instruct)._decode_config({"max_new_tokens": 9, "temperature": 0})
    assert cfg.processing.names == ("RepetitionPenaltyLogitsProcessor",)
    assert cfg.processing.config.eos_token_id == 151645 and cfg.processing.config.do_sample is False  # the call's
    assert backend(cls)._decode_config({}).processing is None


@pytest.mark.parametrize("cls", [LVSpecQwen, LVSpecLlavaOV])
def test_a_task_asking_for_beam_search_is_refused_with_the_fix(cls):
    with pytest.raises(ArgsError, match=r"beam_search, not greedy search, because of num_beams=4 .*set num_beams: 1"):
        backend(cls)._decode_config({"num_beams": 4})
    assert backend(cls)._decode_config({"num_beams": 1}).processing is None


def test_a_checkpoint_setting_that_cannot_be_replayed_is_refused_with_the_fix():
    with pytest.raises(ArgsError, match=r"guidance_scale=3.0 in the checkpoint's generation_config.json is not "
                                        r"supported: .* remove it from the checkpoint's generation_config.json"):
        backend(LVSpecQwen, generation={"guidance_scale": 3.0})._decode_config({})
