"""Backend glue without models: generation kwargs, until cutting, per-sample seeds, stats path."""

import pytest

from lvspec_eval.config import ArgsError, LVSpecArgs
from lvspec_eval.lmms.backend import LVSpecBackend, cut_at_until, default_stats_path, sample_seed


class _Tok:
    eos_token_id = 151645


class _Adapter:
    tokenizer = _Tok()


def backend(**args):
    b = object.__new__(LVSpecBackend)  # glue only: no model loading
    b.args = LVSpecArgs(**args)
    b.target = _Adapter()
    return b


def test_generation_kwargs_are_honoured():
    cfg = backend(num_draft_tokens=4)._decode_config({"max_new_tokens": 7, "until": ["\n\n", "Q:"], "temperature": 0})
    assert cfg.max_new_tokens == 7 and cfg.until == ("\n\n", "Q:") and cfg.eos_ids == (151645,)
    assert cfg.num_draft_tokens == 4
    assert backend()._decode_config({}).max_new_tokens == 128
    assert backend()._decode_config({"until": "STOP"}).until == ("STOP",)


@pytest.mark.parametrize("kwargs", [{"temperature": 0.7}, {"do_sample": True}])
def test_sampling_is_refused_with_the_fix(kwargs):
    with pytest.raises(ArgsError, match="greedily only.*temperature: 0"):
        backend()._decode_config(kwargs)


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
