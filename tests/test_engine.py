"""The correctness invariant on tiny Qwen2.5-VL, LLaVA-OneVision and Qwen3-VL (dense and MoE) models
(every test runs for every family of conftest.FAMILIES): lossless methods == plain greedy, token for token. The LLaVA-OneVision drafter has more
embedding rows than its target (152064 vs 151936), as the real 0.5B/7B/72B models differ."""

import pytest
import torch

from conftest import method
from lvspec_eval.acceptance import RandomRule, StrictRule
from lvspec_eval.config import DecodeConfig
from lvspec_eval.engine import decode
from lvspec_eval.metrics.records import decode_fields, paired_fields
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


@pytest.fixture(scope="module")
def sd_runs(target, draft, inputs):
    """`sd` with the family's random drafter, K = 5, per input (read by several tests, decoded once)."""
    return [SD.decode(target, draft, inp, cfg(5), seed=0) for inp in inputs]


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


def test_sd_random_drafter_is_lossless(sd_runs, ar_runs):
    total_acc, total_prop = 0, 0
    for r, ar in zip(sd_runs, ar_runs):
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


def test_lvspec_lambda0_w0_equals_sd(target, draft, inputs, ar_runs, sd_runs):
    lv_method = method("lvspec", relevance_repr="embedding", anchor_rule="rank", relax_ratio=0.0, shift_window=0)
    for inp, ar, sd in zip(inputs, ar_runs, sd_runs):
        lv = lv_method.decode(target, draft, inp, cfg(5), seed=0)
        assert lv.tokens == sd.tokens == ar.tokens
        assert lv.provenance == sd.provenance and lv.rounds == sd.rounds
        assert set(lv.anchor_flags) <= {"a", "-"}


def test_lvspec_relaxed_accepts_more_and_counts_add_up(target, draft, inputs, sd_runs):
    inp, sd = inputs[0], sd_runs[0]
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


def test_target_prob_rule_lambda0_is_sd_and_relaxed_accepts_more(target, draft, inputs, ar_runs, sd_runs):
    def target_prob(lam):
        return method("lvspec", anchor_rule="target_prob", relax_ratio=lam, shift_window=0)
    sd = sd_runs[0]
    lv0 = target_prob(0.0).decode(target, draft, inputs[0], cfg(5), seed=0)
    assert lv0.tokens == sd.tokens == ar_runs[0].tokens and lv0.provenance == sd.provenance
    # relaxed: more accepted over the samples (a tiny random pair may have a sample with no confident target)
    sds = sd_runs[:3]
    lvs = [target_prob(0.999).decode(target, draft, inp, cfg(5), seed=0) for inp in inputs[:3]]
    assert sum(r.accepted for r in lvs) > sum(r.accepted for r in sds)
    assert sum(r.accepted_loose for r in lvs) > 0 and any("f" in r.anchor_flags for r in lvs)


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


def detok(target):
    tok = target.tokenizer
    return lambda ids: tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def plan_until(decode, toks, lo, hi):
    """(u, until): a 2-4 character string whose first occurrence in the text completes at token u,
    lo <= u <= hi (the text of tokens[:u+1] has it, the text of tokens[:u] does not)."""
    for u in range(lo, hi + 1):
        before, text = decode(toks[:u]), decode(toks[:u + 1])
        for width in (2, 3, 4):
            until = text[-width:]
            if len(text) > len(before) and until.strip() and until not in before and "\ufffd" not in until:
                return u, until
    raise AssertionError("no token completes a fresh stop string; change the tiny models' seeds")


K = 5  # identical drafter: round r emits tokens 6r-5 .. 6r (K drafts + bonus)


def check_same_as_ar(target, inp, c, stop_at, reason):
    detokenize = detok(target)
    ar = decode(target, inp, c, detokenize=detokenize)
    sd = decode(target, inp, c, draft=target, rule=StrictRule(), detokenize=detokenize)
    assert ar.tokens == sd.tokens and len(sd.tokens) == stop_at + 1  # token for token, stopped on the same token
    assert ar.stop_reason == sd.stop_reason == reason
    round_of = (stop_at - 1) // (K + 1) + 1
    assert sd.rounds == round_of and ar.rounds == stop_at
    assert sd.provenance == "P" + ("E" * K + "B") * (round_of - 1) + "E" * (stop_at - (K + 1) * (round_of - 1))
    assert sd.accepted_exact == sum(sd.accepted_per_position) == sd.provenance.count("E") == stop_at - (round_of - 1)
    assert sum(sd.per_step_accepted) == sd.accepted and len(sd.per_step_drafted) == sd.rounds  # per-round counts
    fields = decode_fields(sd, K)
    assert fields["new_tokens"] == stop_at + 1 and fields["tau"] == pytest.approx(stop_at / round_of)
    paired = paired_fields(sd, ar, detokenize(sd.tokens), detokenize(ar.tokens))
    assert paired["exact_match_ar"] is True and paired["edit_sim_ar"] == 1.0 and paired["ar_new_tokens"] == stop_at + 1
    return sd


def test_until_and_eos_in_the_same_round(target, inputs, ar_runs):
    """The round that completes `until` also drafts and emits an EOS later on: the decode stops on the
    `until` token (as `ar`), not at the EOS."""
    toks = ar_runs[0].tokens
    u, until = plan_until(detok(target), toks, 13, 15)  # inside round 3 (tokens 13..18)
    e = next(i for i in range(u + 1, 19) if toks.index(toks[i]) == i)
    c = DecodeConfig(max_new_tokens=N_NEW, eos_ids=(toks[e],), num_draft_tokens=K, until=(until,))
    check_same_as_ar(target, inputs[0], c, u, "until")
    # without the stop string the same round ends at the EOS
    no_until = DecodeConfig(max_new_tokens=N_NEW, eos_ids=(toks[e],), num_draft_tokens=K)
    check_same_as_ar(target, inputs[0], no_until, e, "eos")


def test_until_and_max_new_tokens_in_the_same_round(target, inputs, ar_runs):
    toks = ar_runs[1].tokens
    u, until = plan_until(detok(target), toks, 13, 15)
    # max_new_tokens 18: round 3 drafts 4 and emits tokens 13..17, the last one hitting the limit
    c = DecodeConfig(max_new_tokens=18, eos_ids=(EOS,), num_draft_tokens=K, until=(until,))
    check_same_as_ar(target, inputs[1], c, u, "until")


def test_until_on_the_first_token_and_never_met(target, inputs, ar_runs):
    toks = ar_runs[2].tokens
    first = detok(target)(toks[:1])
    assert first.strip(), "the first token decodes to whitespace only; pick another clip"
    r = decode(target, inputs[2], DecodeConfig(max_new_tokens=N_NEW, eos_ids=(EOS,), num_draft_tokens=K,
                                               until=(first,)), draft=target, rule=StrictRule(),
               detokenize=detok(target))
    assert r.tokens == toks[:1] and r.stop_reason == "until" and r.rounds == 0
    never = decode(target, inputs[2], DecodeConfig(max_new_tokens=N_NEW, eos_ids=(EOS,), num_draft_tokens=K,
                                                   until=("<|lvspec_never|>",)), draft=target, rule=StrictRule(),
                   detokenize=detok(target))
    assert never.tokens == toks and never.stop_reason == "max_new_tokens"


def test_until_needs_a_detokenizer(target, inputs):
    with pytest.raises(ValueError, match="need a detokenize callable"):
        decode(target, inputs[0], DecodeConfig(max_new_tokens=4, eos_ids=(EOS,), until=("x",)))


class SpyRandom(RandomRule):
    """`random` accepting every mismatch; keeps each round's view."""

    def __init__(self):
        super().__init__(p=1.0)
        self.views = []

    def judge(self, view):
        self.views.append(view)
        return super().judge(view)


def rounds_of(provenance):
    """The provenance codes of each round (a round ends with its correction, bonus or plain step)."""
    out, cur = [], ""
    for code in provenance[1:]:
        cur += code
        if code in "CBT":
            out.append(cur)
            cur = ""
    return out + ([cur] if cur else [])


def test_special_tokens_are_strict_in_the_loop(target, draft, inputs):
    """`random` with p = 1 accepts every mismatch, except where the draft or the target token is special."""
    inp = inputs[0]
    plain_rule = SpyRandom()
    plain = decode(target, inp, cfg(K), draft=draft, rule=plain_rule)
    # call special the tokens that the unguarded run accepted loosely (drafts) or overrode (target)
    special = sorted({int(v.draft_ids[i]) for v in plain_rule.views for i in range(v.draft_ids.numel())
                      if v.draft_ids[i] != v.target_ids[i]}
                     | {int(v.target_ids[i]) for v in plain_rule.views for i in range(v.draft_ids.numel())
                        if v.draft_ids[i] != v.target_ids[i]})
    assert plain.accepted_loose > 0
    spy = SpyRandom()
    guarded = decode(target, inp, DecodeConfig(max_new_tokens=N_NEW, eos_ids=(EOS,), num_draft_tokens=K,
                                               special_ids=tuple(special)), draft=draft, rule=spy)
    assert guarded.accepted_loose < plain.accepted_loose
    per_round = [r for r in rounds_of(guarded.provenance) if not r.endswith("T")]  # T: nothing drafted, no verdicts
    assert len(per_round) == len(spy.views) and guarded.rounds >= len(spy.views)
    for codes, v in zip(per_round, spy.views):
        n = len(codes) - 1  # accepted drafts of the round
        for i in range(n):
            d, t = int(v.draft_ids[i]), int(v.target_ids[i])
            assert d == t or (d not in special and t not in special), (codes, i, d, t)
        if n < v.draft_ids.numel():  # the correction is the target's token
            assert codes[-1] == "C"
