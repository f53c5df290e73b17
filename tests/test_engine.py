"""The correctness invariant on tiny Qwen2.5-VL and LLaVA-OneVision models (every test runs for both
families): lossless methods == plain greedy, token for token. The LLaVA-OneVision drafter has more
embedding rows than its target (152064 vs 151936), as the real 0.5B/7B/72B models differ."""

import pytest
import torch

from conftest import method
from lvspec_eval.config import DecodeConfig
from lvspec_eval.relevance import RelevanceRepr
from testbed.fixtures.scripted import ScriptedDrafter, expected_schedule

EOS = 151645
N_NEW = 40


def cfg(k=5, n=N_NEW, eos=(EOS,)):
    return DecodeConfig(max_new_tokens=n, eos_ids=eos, num_draft_tokens=k)


SD = method("sd")


@pytest.fixture(scope="module")
def ar_runs(target, inputs):
    return [method("ar").decode(target, None, inp, cfg(), seed=0) for inp in inputs]


def test_ar_is_one_token_per_round(ar_runs):
    for r in ar_runs:
        assert len(r.tokens) == N_NEW  # random tiny models do not emit EOS here
        assert r.rounds == N_NEW - 1 and r.provenance == "P" + "T" * (N_NEW - 1)
        assert len(set(r.tokens)) > 5, "tiny model output is degenerate; the test would prove little"


def test_ar_matches_hf_generate(target, inputs, ar_runs):
    """Our greedy loop (explicit positions, M-RoPE for Qwen; cropped cache) == transformers' generate."""
    inp = inputs[0]
    with torch.inference_mode():
        out = target.model.generate(**inp, max_new_tokens=N_NEW, do_sample=False, eos_token_id=EOS)
    assert out[0, inp["input_ids"].shape[1]:].tolist() == ar_runs[0].tokens


@pytest.mark.parametrize("k", [1, 4, 10])
def test_sd_identical_drafter_accepts_everything(target, inputs, ar_runs, k):
    for inp, ar in zip(inputs, ar_runs):
        r = SD.decode(target, target, inp, cfg(k), seed=0)
        assert r.tokens == ar.tokens
        # every round but a truncated last one accepts all K and adds the bonus
        full_rounds = (N_NEW - 1) // (k + 1)
        assert r.provenance.startswith("P" + ("E" * k + "B") * full_rounds)
        assert r.accepted_exact == r.accepted and r.accepted_loose == r.accepted_shift == 0
        assert r.accepted_per_position[-1] == full_rounds


def test_sd_random_drafter_is_lossless(target, draft, inputs, ar_runs):
    total_acc, total_prop = 0, 0
    for inp, ar in zip(inputs, ar_runs):
        r = SD.decode(target, draft, inp, cfg(5), seed=0)
        assert r.tokens == ar.tokens
        total_acc += r.accepted
        total_prop += r.proposed
    assert total_acc / total_prop < 0.1  # a random drafter almost never agrees


@pytest.mark.parametrize("k,wrong", [(4, {1, 2, 7, 8, 9, 20, 21, 33}), (10, {5, 6, 17, 30}), (3, set(range(1, 40, 2)))])
def test_sd_scripted_drafter_exact_partial_counts(target, inputs, ar_runs, k, wrong):
    inp, ar = inputs[1], ar_runs[1]
    drafter = ScriptedDrafter(ar.tokens, wrong, vocab_size=target.vocab_size)
    r = SD.decode(target, drafter, inp, cfg(k), seed=0)
    assert r.tokens == ar.tokens
    exp = expected_schedule(N_NEW, k, wrong)
    assert r.rounds == exp["rounds"]
    assert r.accepted_exact == exp["accepted"]
    assert r.accepted_per_position == exp["accepted_per_position"]
    assert r.per_step_drafted == exp["per_step_drafted"] and r.per_step_accepted == exp["per_step_accepted"]


def test_lvspec_lambda0_w0_equals_sd(target, draft, inputs, ar_runs):
    lv_method = method("lvspec", relevance_repr="embedding", anchor_rule="rank", relax_ratio=0.0, shift_window=0)
    for inp, ar in zip(inputs, ar_runs):
        sd = SD.decode(target, draft, inp, cfg(5), seed=0)
        lv = lv_method.decode(target, draft, inp, cfg(5), seed=0)
        assert lv.tokens == sd.tokens == ar.tokens
        assert lv.provenance == sd.provenance and lv.rounds == sd.rounds
        assert set(lv.anchor_flags) <= {"a", "-"}


def test_lvspec_relaxed_accepts_more_and_counts_add_up(target, draft, inputs):
    inp = inputs[0]
    sd = SD.decode(target, draft, inp, cfg(5), seed=0)
    lv = method("lvspec", relevance_repr="embedding", anchor_rule="rank", relax_ratio=0.7,
                shift_window=2).decode(target, draft, inp, cfg(5), seed=0)
    assert lv.accepted > sd.accepted and lv.accepted_loose > 0
    assert len(lv.tokens) == len(lv.provenance) == len(lv.anchor_flags) == N_NEW
    assert lv.accepted == sum(lv.accepted_per_position) == sum(c in "ELS" for c in lv.provenance)
    assert lv.rounds == sum(c in "CBT" for c in lv.provenance)
    assert lv.accepted == sum(lv.per_step_accepted) and lv.proposed == sum(lv.per_step_drafted)
    assert len(lv.per_step_accepted) == len(lv.per_step_drafted) == lv.rounds
    assert all(0 <= a <= d for a, d in zip(lv.per_step_accepted, lv.per_step_drafted))


def test_hidden_representation_runs_and_lambda0_is_sd(target, draft, inputs, ar_runs):
    hidden = method("lvspec", anchor_rule="quantile", relevance_repr="hidden", relevance_layer=-1, relax_ratio=0.0,
                    shift_window=0)
    assert hidden.capture_layer == -1 and hidden.probe_layer is None
    assert hidden.anchors.verify_signal is RelevanceRepr.HIDDEN
    _, prefill = target.start(inputs[2], capture_layer=hidden.capture_layer)  # what the finder reads
    assert prefill.hidden is not None and prefill.hidden.shape[0] == prefill.prompt_ids.shape[0]
    lv = hidden.decode(target, draft, inputs[2], cfg(5), seed=0)
    assert lv.tokens == ar_runs[2].tokens and "a" in lv.anchor_flags


def test_target_prob_rule_lambda0_is_sd_and_relaxed_accepts_more(target, draft, inputs, ar_runs):
    def target_prob(lam):
        return method("lvspec", anchor_rule="target_prob", relax_ratio=lam, shift_window=0)
    sd = SD.decode(target, draft, inputs[0], cfg(5), seed=0)
    lv0 = target_prob(0.0).decode(target, draft, inputs[0], cfg(5), seed=0)
    assert lv0.tokens == sd.tokens == ar_runs[0].tokens and lv0.provenance == sd.provenance
    lv = target_prob(0.999).decode(target, draft, inputs[0], cfg(5), seed=0)
    assert lv.accepted > sd.accepted and lv.accepted_loose > 0 and "f" in lv.anchor_flags


def test_block_forward_equals_step_forward(target, inputs, ar_runs):
    inp, toks = inputs[0], ar_runs[0].tokens
    block_sess, pre = target.start(inp)
    block = block_sess.extend(torch.tensor(toks[:8]))  # [8, V]
    step_sess, _ = target.start(inp)
    steps = torch.stack([step_sess.extend(torch.tensor([t]))[0] for t in toks[:8]])
    assert torch.allclose(block, steps, atol=1e-4, rtol=1e-4), (block - steps).abs().max()
    assert block.argmax(-1).tolist() == toks[1:9]
    # crop, then re-extend: same logits as a fresh forward (the cache is cut correctly)
    block_sess.crop(block_sess.length - 5)
    again = block_sess.extend(torch.tensor(toks[3:8]))
    assert torch.allclose(again, block[3:8], atol=1e-4, rtol=1e-4)


def test_max_new_tokens_and_eos_trim(target, inputs, ar_runs):
    ar = ar_runs[0]
    for n in (1, 2, 7):
        r = SD.decode(target, target, inputs[0], cfg(5, n=n), seed=0)
        assert r.tokens == ar.tokens[:n] and r.stop_reason == "max_new_tokens"
    # pretend the 12th token is EOS: decoding stops right after it, in the middle of a block
    fake_eos = ar.tokens[11]
    first = ar.tokens.index(fake_eos)
    r = SD.decode(target, target, inputs[0], cfg(5, eos=(fake_eos,)), seed=0)
    assert r.tokens == ar.tokens[: first + 1] and r.stop_reason == "eos"


def test_until_stop_callback(target, inputs, ar_runs):
    ar = ar_runs[0]
    seen = []

    def stop(tokens):
        seen.append(len(tokens))
        return len(tokens) >= 9

    r = SD.decode(target, target, inputs[0], cfg(5), seed=0, stop=stop)
    assert r.stop_reason == "until" and r.tokens == ar.tokens[: len(r.tokens)] and len(r.tokens) >= 9
    # the per-round counts follow the tokens dropped after the stop
    assert sum(r.per_step_accepted) == r.accepted == sum(c in "ELS" for c in r.provenance)
