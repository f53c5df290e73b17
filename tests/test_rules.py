"""Acceptance rules on hand-built token/logit tables (no models)."""

import math

import pytest
import torch

from conftest import method
from lvspec_eval.acceptance import (
    EXACT, LOOSE, REJECT, SHIFT, FlyPlusRule, FlyRule, LVSpecRule, RandomRule, RoundView, StrictRule,
    accepted_length, fly_window_ok, judge_round, shift_hits, strict_on_special, top_k_entropy,
)
from lvspec_eval.relevance import AnchorRule, AnchorSelector, AnchorSide, RelevanceScorer, rank_anchor_count

RANK, QUANTILE, BOTH = AnchorRule.RANK, AnchorRule.QUANTILE, AnchorSide.BOTH

V = 16


def logits_for(target_ids, confident=None):
    """[K+1, V] logits whose argmax is target_ids; rows in `confident` are peaked (low entropy),
    the others have a near-tie among three tokens (top-3 entropy ~ ln 3)."""
    rows = []
    for i, t in enumerate(target_ids):
        row = torch.full((V,), -10.0)
        if confident is not None and i in confident:
            row[t] = 10.0
        else:
            row[(t + 1) % V] = 1.9
            row[(t + 2) % V] = 1.9
            row[t] = 2.0
        rows.append(row)
    return torch.stack(rows)


def view(draft, target, anchors=None, confident=None, generator=None, special=None):
    d, t = torch.tensor(draft), torch.tensor(target)
    return RoundView(d, t, logits_for(target, confident), anchors=None if anchors is None else torch.tensor(anchors),
                     generator=generator, special_ids=None if special is None else torch.tensor(special))


def codes(v):
    return v.tolist()


def test_accepted_length():
    assert accepted_length(torch.tensor([1, 1, 0, 1], dtype=torch.int8)) == 2
    assert accepted_length(torch.tensor([0, 1], dtype=torch.int8)) == 0
    assert accepted_length(torch.tensor([1, 2, 3], dtype=torch.int8)) == 3
    assert accepted_length(torch.tensor([], dtype=torch.int8)) == 0


def test_strict_exact_prefix_only():
    v = view([1, 2, 9, 4], [1, 2, 3, 4, 5])
    out = StrictRule().judge(v)
    assert codes(out) == [EXACT, EXACT, REJECT, EXACT]
    assert accepted_length(out) == 2


def test_shift_hits_window():
    d = torch.tensor([5, 7, 9, 1])
    t = torch.tensor([7, 5, 3, 3, 9])
    # d0=5 == t1 (j-i=1); d1=7 == t0 (j-i=-1); d2=9 == t4 (j-i=2); d3=1 nowhere
    assert shift_hits(d, t, 1).tolist() == [True, True, False, False]
    assert shift_hits(d, t, 2).tolist() == [True, True, True, False]
    assert shift_hits(d, t, 0).tolist() == [False, False, False, False]
    # same position never counts as a shift
    assert shift_hits(torch.tensor([3]), torch.tensor([3, 8]), 2).tolist() == [False]


def test_lvspec_fillers_loose_anchors_strict_or_shift():
    # positions: 0 exact, 1 filler mismatch, 2 anchor mismatch salvaged by shift, 3 anchor mismatch
    v = view([1, 9, 6, 11], [1, 2, 3, 6, 5], anchors=[True, False, True, True])
    out = LVSpecRule(shift_window=1).judge(v)
    assert codes(out) == [EXACT, LOOSE, SHIFT, REJECT]
    assert accepted_length(out) == 3
    # w = 0 disables the salvage
    assert codes(LVSpecRule(shift_window=0).judge(v)) == [EXACT, LOOSE, REJECT, REJECT]


def test_lvspec_all_anchors_no_shift_equals_strict():
    torch.manual_seed(0)
    for _ in range(200):
        k = 6
        t = torch.randint(0, 4, (k + 1,))
        d = torch.where(torch.rand(k) < 0.6, t[:k], torch.randint(0, 4, (k,)))
        v = RoundView(d, t, logits_for(t.tolist()), anchors=torch.ones(k, dtype=torch.bool))
        assert torch.equal(LVSpecRule(shift_window=0).judge(v), StrictRule().judge(v))


def test_lambda_zero_makes_every_position_an_anchor():
    scores = torch.tensor([0.1, 0.5, -0.2, 0.3])
    assert AnchorSelector(RANK, 0.0, BOTH).select(scores).all()
    sel = AnchorSelector(QUANTILE, 0.0, BOTH, history=torch.tensor([0.0, 0.9, -1.0]))
    assert sel.select(scores).all()


def test_rank_rule_counts_and_order():
    assert rank_anchor_count(0.7, 10) == 3
    assert rank_anchor_count(0.0, 10) == 10
    assert rank_anchor_count(1.0, 10) == 0
    assert rank_anchor_count(0.7, 4) == 2  # ceil(1.2)
    sel = AnchorSelector(RANK, 0.5, BOTH)
    assert sel.select(torch.tensor([0.1, 0.9, 0.3, 0.8])).tolist() == [False, True, False, True]


def test_quantile_rule_uses_history_and_observes():
    sel = AnchorSelector(QUANTILE, 0.5, BOTH, history=torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))
    # median of history = 2.0
    assert sel.select(torch.tensor([1.9, 2.0, 3.5])).tolist() == [False, True, True]
    sel.observe(torch.tensor([10.0, 10.0, 10.0, 10.0]))  # median of history now 4.0
    assert sel.select(torch.tensor([3.5, 4.0])).tolist() == [False, True]


def test_anchor_side():
    sd, st = torch.tensor([0.1, 0.9]), torch.tensor([0.8, 0.2])
    assert AnchorSide.DRAFT.combine(sd, st).tolist() == sd.tolist()
    assert AnchorSide.TARGET.combine(sd, st).tolist() == st.tolist()
    assert AnchorSide.BOTH.combine(sd, st).tolist() == pytest.approx([0.8, 0.9])
    assert AnchorSelector(RANK, 0.5, AnchorSide.DRAFT).position_scores(sd, st).tolist() == sd.tolist()


def test_relevance_scorer_top_n_mean():
    visual = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    scorer = RelevanceScorer(visual, top_n=2)
    s = scorer.score(torch.tensor([[2.0, 0.0]]))
    # cosines: 1, 0, 1/sqrt2 -> top-2 mean = (1 + 0.7071)/2
    assert s.item() == pytest.approx((1 + 1 / math.sqrt(2)) / 2, abs=1e-6)
    assert RelevanceScorer(visual, top_n=100).top_n == 3  # clamped to the visual token count


# -- FLy as AMD-AGI/FLy's code computes it (fly/models/FLy.py @ 6667ae8; docs/baselines.md) ----------
# Expected numbers below are worked out by hand from FLy's formula, H = -sum_{top-k} p ln p with p
# from the softmax over the WHOLE vocabulary (not renormalised), natural log; a mismatch at i is
# loose iff H(i) >= 0.3, the W-1 draft tokens after i are exact, and i <= K - W - 1.
FV = 100  # vocabulary of the hand-built FLy rows


def prob_row(top: list[float], first: int) -> torch.Tensor:
    """[FV] logits = ln p of a distribution whose most likely tokens are first, first+1, ... with
    probabilities `top`; the rest of the mass is spread evenly over the other FV - len(top) tokens."""
    rest = (1.0 - sum(top)) / (FV - len(top))
    p = torch.full((FV,), rest, dtype=torch.float64)
    for j, q in enumerate(top):
        p[(first + j) % FV] = q
    return p.log().float()


UNSURE = [0.9, 0.05, 0.04]  # H = 0.9 ln(1/0.9) + 0.05 ln 20 + 0.04 ln 25 = 0.09482 + 0.14979 + 0.12876 = 0.37337
SURE = [0.95, 0.03, 0.02]   # H = 0.04873 + 0.10520 + 0.07824 = 0.23217 < 0.3


def fly_view(draft: list[int], target: list[int], rows: dict[int, list[float]] | None = None) -> RoundView:
    """A round whose target logits put UNSURE (or rows[i]) on target[i] and its two successors."""
    rows = rows or {}
    logits = torch.stack([prob_row(rows.get(i, UNSURE), t) for i, t in enumerate(target)])
    return RoundView(torch.tensor(draft), torch.tensor(target), logits)


def test_top_k_entropy_is_flys_full_softmax_formula():
    # p = (0.6, 0.25, 0.1, 0.05): top-3 of the full softmax, not renormalised, nats:
    # 0.6 ln(1/0.6) + 0.25 ln 4 + 0.1 ln 10 = 0.306495 + 0.346574 + 0.230259 = 0.883328
    row = torch.tensor([0.6, 0.25, 0.1, 0.05]).log().view(1, -1)
    assert top_k_entropy(row).item() == pytest.approx(0.883328, abs=1e-5)
    assert top_k_entropy(row + 7.0).item() == pytest.approx(0.883328, abs=1e-5)  # logits, not probabilities
    assert top_k_entropy(row, k=2).item() == pytest.approx(0.306495 + 0.346574, abs=1e-5)
    # renormalised over the top-3 (this project's option): q = p / 0.95 = (0.631579, 0.263158, 0.105263)
    # 0.631579 * 0.459532 + 0.263158 * 1.335001 + 0.105263 * 2.251292 = 0.878525
    assert top_k_entropy(row, renormalise=True).item() == pytest.approx(0.878525, abs=1e-5)
    # 100 equal tokens: FLy's entropy is 3 * 0.01 * ln 100 = 0.138155 (low: FLy reads it as sure),
    # renormalised it is ln 3 = 1.098612
    flat = torch.zeros(1, FV)
    assert top_k_entropy(flat).item() == pytest.approx(0.138155, abs=1e-5)
    assert top_k_entropy(flat, renormalise=True).item() == pytest.approx(1.098612, abs=1e-5)
    # the hand-built rows of the rule tests
    assert top_k_entropy(prob_row(UNSURE, 5).view(1, -1)).item() == pytest.approx(0.373366, abs=1e-5)
    assert top_k_entropy(prob_row(SURE, 5).view(1, -1)).item() == pytest.approx(0.232166, abs=1e-5)
    # masked (-inf) logits contribute nothing
    masked = torch.tensor([[0.0, 0.0, float("-inf"), float("-inf")]])
    assert top_k_entropy(masked).item() == pytest.approx(math.log(2), abs=1e-6)


def test_fly_plus_entropy_gate():
    # a mismatch is loose where H >= 0.3 (0.373) and rejected where H < 0.3 (0.232)
    v = fly_view([1, 9, 9, 4], [1, 2, 3, 4, 5], rows={2: SURE})
    assert codes(FlyPlusRule(0.3).judge(v))[:3] == [EXACT, LOOSE, REJECT]
    assert codes(FlyPlusRule(0.2).judge(v))[:3] == [EXACT, LOOSE, LOOSE]
    assert codes(FlyPlusRule(0.4).judge(v))[:3] == [EXACT, REJECT, REJECT]
    # a flat target: FLy's entropy 0.138 < 0.3 rejects; renormalised (ln 3) accepts
    flat = RoundView(torch.tensor([7]), torch.tensor([0, 1]), torch.zeros(2, FV))
    assert codes(FlyPlusRule(0.3).judge(flat)) == [REJECT]
    assert codes(FlyPlusRule(0.3, entropy_norm="top_k").judge(flat)) == [LOOSE]
    # other k on the flat row: k = 1 gives 0.01 ln 100 = 0.046 < 0.3; k = 100 gives ln 100 = 4.605
    assert codes(FlyPlusRule(0.3, entropy_top_k=1).judge(flat)) == [REJECT]
    assert codes(FlyPlusRule(0.3, entropy_top_k=100).judge(flat)) == [LOOSE]
    assert codes(FlyPlusRule(4.7, entropy_top_k=100).judge(flat)) == [REJECT]


def test_fly_gate_is_off_at_or_below_one_hundredth():
    """AMD's code keeps the threshold only if it is > 0.01; a peaked target (H ~ 3e-7) then passes."""
    peaked = torch.full((2, FV), 0.0)
    peaked[:, 0] = 20.0  # p(top) = e^20 / (e^20 + 99): H = 2.8e-7
    v = RoundView(torch.tensor([7]), torch.tensor([0, 0]), peaked)
    assert top_k_entropy(peaked[:1]).item() < 1e-5
    assert codes(FlyPlusRule(0.005).judge(v)) == [LOOSE]
    assert codes(FlyPlusRule(0.0).judge(v)) == [LOOSE]
    assert codes(FlyPlusRule(0.02).judge(v)) == [REJECT]


T10 = list(range(1, 12))  # target t_1..t_11 of a K = 10 round


def with_mismatch(*positions: int, k: int = 10) -> list[int]:
    """Draft = target except at `positions` (0-based)."""
    return [90 if i in positions else T10[i] for i in range(k)]


def test_fly_window_hand_table_k10_w6():
    """K = 10, W = 6 (FLy's win_len): a mismatch at i needs d_{i+1..i+5} exact and i <= K-W-1 = 3."""
    fly = FlyRule(window=6)
    # i = 3: d_4..d_8 exact; d_9 (position 9) mismatches but lies outside the window -> loose
    out = fly.judge(fly_view(with_mismatch(3, 9), T10))
    assert codes(out) == [EXACT] * 3 + [LOOSE] + [EXACT] * 5 + [REJECT]
    assert accepted_length(out) == 9
    # i = 4: five exact tokens follow, but 4 is among the block's last W positions -> rejected
    out = fly.judge(fly_view(with_mismatch(4), T10))
    assert codes(out)[4] == REJECT and accepted_length(out) == 4
    # ... which this project's `in_block` rule accepts (its last position is K - W = 4)
    assert codes(FlyRule(window=6, window_rule="in_block").judge(fly_view(with_mismatch(4), T10)))[4] == LOOSE
    assert codes(FlyRule(window=6, window_rule="in_block").judge(fly_view(with_mismatch(5), T10)))[5] == REJECT
    # i = 0 with a second mismatch at 2 inside its window -> rejected (the window needs EXACT tokens,
    # even though the second mismatch is itself unsure)
    out = fly.judge(fly_view(with_mismatch(0, 2), T10))
    assert codes(out)[0] == REJECT and accepted_length(out) == 0
    # i = 1 passes the window, but the target is sure there (H = 0.232 < 0.3) -> rejected
    out = fly.judge(fly_view(with_mismatch(1), T10, rows={1: SURE}))
    assert codes(out)[:2] == [EXACT, REJECT]
    # gate off (threshold <= 0.01): the window alone decides
    assert codes(FlyRule(window=6, entropy_threshold=0.0).judge(fly_view(with_mismatch(1), T10, rows={1: SURE})))[1] == LOOSE


def test_fly_window_short_blocks():
    """K <= W: AMD's FLy accepts nothing loosely; K = W + 1: only position 0 can be loose."""
    for k in (3, 5, 6):
        out = FlyRule(window=6).judge(fly_view(with_mismatch(0, k=k), T10[: k + 1]))
        assert codes(out)[0] == REJECT
    out = FlyRule(window=6).judge(fly_view(with_mismatch(0, 6, k=7), T10[:8]))
    assert codes(out) == [LOOSE] + [EXACT] * 5 + [REJECT]
    # in_block with K = W = 6: position 0 has its five exact tokens inside the block -> loose
    assert codes(FlyRule(window=6, window_rule="in_block").judge(fly_view(with_mismatch(0, k=6), T10[:7])))[0] == LOOSE


def test_fly_window_ok_matches_the_rule_stated_position_by_position():
    """fly_window_ok against the rule written out per position (plain Python), all 2^8 patterns."""
    k = 8
    for bits in range(1 << k):
        exact = [bool(bits >> i & 1) for i in range(k)]
        for w in (1, 2, 3, 6, 8):
            amd = [i <= k - w - 1 and all(exact[i + 1 : i + w]) for i in range(k)]
            in_block = [i <= k - w and all(exact[i + 1 : i + w]) for i in range(k)]
            assert fly_window_ok(torch.tensor(exact), w, "amd").tolist() == amd
            assert fly_window_ok(torch.tensor(exact), w, "in_block").tolist() == in_block


def test_fly_window_one_is_fly_plus_except_the_last_position():
    v = fly_view(with_mismatch(2, 9), T10)
    assert codes(FlyRule(window=1).judge(v))[2] == LOOSE  # no following token needed
    assert codes(FlyRule(window=1).judge(v))[9] == REJECT  # AMD: the last W = 1 position is reverted
    assert torch.equal(FlyRule(window=1, window_rule="in_block").judge(v), FlyPlusRule().judge(v))


def test_fly_rules_refuse_bad_settings():
    with pytest.raises(ValueError, match="window_rule"):
        FlyRule(window_rule="late")
    with pytest.raises(ValueError, match="entropy_norm"):
        FlyPlusRule(entropy_norm="log2")
    with pytest.raises(ValueError, match="entropy_top_k"):
        FlyPlusRule(entropy_top_k=0)


def test_random_rule_seeded_and_reproducible():
    t = list(range(1, 12))
    d = [0] * 10  # every position mismatches
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return [codes(RandomRule(0.5).judge(view(d, t, generator=g))) for _ in range(5)]
    assert run(7) == run(7)
    assert run(7) != run(8)
    g = torch.Generator().manual_seed(0)
    assert set(codes(RandomRule(1.0).judge(view(d, t, generator=g)))) == {LOOSE}
    assert set(codes(RandomRule(0.0).judge(view(d, t, generator=g)))) == {REJECT}


def test_build_rule_per_method():
    assert method("ar").rule is None
    assert type(method("sd").rule) is StrictRule
    assert type(method("specvlm").rule) is StrictRule
    assert type(method("lvspec").rule) is LVSpecRule
    assert type(method("fly").rule) is FlyRule
    assert type(method("fly_plus").rule) is FlyPlusRule
    assert type(method("random").rule) is RandomRule
    fly = method("fly").rule
    assert (fly.window, fly.window_rule, fly.entropy_threshold, fly.entropy_top_k, fly.entropy_norm) == (
        6, "amd", 0.3, 3, "full")
    fly = method("fly", fly_window=4, fly_window_rule="in_block", fly_entropy=0.5, fly_entropy_top_k=2,
                 fly_entropy_norm="top_k").rule
    assert (fly.window, fly.window_rule, fly.entropy_threshold, fly.entropy_top_k, fly.entropy_norm) == (
        4, "in_block", 0.5, 2, "top_k")
    plus = method("fly_plus", fly_entropy_top_k=5, fly_entropy_norm="top_k").rule
    assert (plus.entropy_top_k, plus.entropy_norm) == (5, "top_k")


def test_target_prob_rule_flags_where_the_target_rejects_the_draft_token():
    """anchor_rule=target_prob: a filler where p_T(d) >= (1 - lambda) p_T(t); lambda = 0 flags every
    mismatch (LVSpec == SD); lambda = 1 flags nothing; scores are log p_T(t) - log p_T(d)."""
    t = torch.tensor([3, 5, 7, 9])
    logits = torch.full((4, V), -10.0)
    logits[0, 3] = 0.0                       # exact position: d_1 = t_1
    logits[1, 5], logits[1, 6] = 0.0, -0.1   # d_2 = 6 nearly as likely as t_2 (ratio 0.905)
    logits[2, 7], logits[2, 8] = 0.0, -1.0   # d_3 = 8: ratio e^-1 = 0.368
    logits[3, 9] = 0.0                       # bonus row
    d = torch.tensor([3, 6, 8])

    def finder(lam):
        return method("lvspec", anchor_rule="target_prob", relax_ratio=lam).anchors.finder_over(None, None, lambda x: x)

    def flags(lam):
        return finder(lam).round(d, t, None, logits)

    anchors, scores = flags(0.7)  # filler iff ratio >= 0.3
    assert anchors.tolist() == [False, False, False]
    assert scores.tolist() == pytest.approx([0.0, 0.1, 1.0])
    assert flags(0.5)[0].tolist() == [False, False, True]   # ratio 0.368 < 0.5
    assert flags(0.05)[0].tolist() == [False, True, True]   # ratio 0.905 < 0.95
    assert flags(0.0)[0].tolist() == [False, True, True]    # every mismatch is an anchor
    assert flags(1.0)[0].tolist() == [False, False, False]
    # through LVSpecRule: lambda = 0 with w = 0 is exactly strict SD
    view = RoundView(d, t, logits, anchors=flags(0.0)[0])
    assert torch.equal(LVSpecRule(shift_window=0).judge(view), StrictRule().judge(view))
    assert LVSpecRule(shift_window=0).judge(RoundView(d, t, logits, anchors=flags(0.5)[0])).tolist() == [EXACT, LOOSE, REJECT]
    with pytest.raises(RuntimeError, match="target logits"):
        finder(0.5).round(d, t, None)


# -- EOS and special tokens are always strict (one guard for every rule: acceptance.judge_round) ------------
EOS, VSTART = 15, 14  # stand-ins for <|im_end|> and <|vision_start|>
SPECIAL = [VSTART, EOS]
T6 = [1, 2, 3, 4, 5, 6, 7]  # target t_1..t_7 of a K = 6 round; every row a near-tie (the target is unsure)


def loose_rules():
    """Each loose rule set up so that, without the guard, it accepts every mismatch of the tables below."""
    return {
        "lvspec (fillers)": (LVSpecRule(shift_window=2), [False] * 6),
        "lvspec (anchors, shift)": (LVSpecRule(shift_window=2), [True] * 6),
        "fly": (FlyRule(window=2, window_rule="in_block"), None),  # in_block: position 4 of 6 may pass its window
        "fly_plus": (FlyPlusRule(0.3), None),
        "random": (RandomRule(1.0), None),
    }


def with_token(seq, i, tok):
    out = list(seq)
    out[i] = tok
    return out


# (draft d_1..d_6, target t_1..t_7, the position that must be rejected)
SPECIAL_TABLE = {
    "drafted EOS where the target goes on": (with_token(T6[:6], 1, EOS), T6, 1),
    "filler where the target says EOS": (with_token(T6[:6], 1, 9), with_token(T6, 1, EOS), 1),
    "drafted special token": (with_token(T6[:6], 1, VSTART), T6, 1),
    "filler where the target says a special token": (with_token(T6[:6], 1, 9), with_token(T6, 1, VSTART), 1),
    # shift salvage: d_5 = EOS equals the bonus t_7; d_3 = 4 equals t_4 where t_3 is EOS
    "drafted EOS salvaged by shift": ([1, 2, 3, 4, EOS, 6], with_token(T6, 6, EOS), 4),
    "shift where the target says EOS": ([1, 2, 4, 4, 5, 6], with_token(T6, 2, EOS), 2),
}


@pytest.mark.parametrize("case", list(SPECIAL_TABLE))
@pytest.mark.parametrize("name", list(loose_rules()))
def test_special_tokens_are_strict_under_every_loose_rule(name, case):
    rule, anchors = loose_rules()[name]
    draft, target, pos = SPECIAL_TABLE[case]
    v = view(draft, target, anchors=anchors, generator=torch.Generator().manual_seed(0), special=SPECIAL)
    plain = rule.judge(v)
    guarded = judge_round(rule, v)
    if name != "lvspec (anchors, shift)" or "shift" in case:  # the rule alone would accept the position
        assert plain[pos] in (LOOSE, SHIFT), (name, case, codes(plain))
    assert guarded[pos] == REJECT, (name, case, codes(guarded))
    assert accepted_length(guarded) == pos  # the correction emitted is t_pos: the target's own token
    assert codes(guarded)[:pos] == [EXACT] * pos  # nothing else changes before it
    others = [i for i in range(6) if i != pos]
    assert [codes(guarded)[i] for i in others] == [codes(plain)[i] for i in others]


@pytest.mark.parametrize("name", list(loose_rules()))
def test_exact_special_tokens_stay_exact(name):
    rule, anchors = loose_rules()[name]
    target = with_token(with_token(T6, 1, EOS), 3, VSTART)
    draft = target[:6]  # d == t everywhere, specials included
    v = view(draft, target, anchors=anchors, generator=torch.Generator().manual_seed(0), special=SPECIAL)
    assert codes(judge_round(rule, v)) == [EXACT] * 6


def test_strict_rule_and_no_special_ids_are_unchanged():
    v = view(with_token(T6[:6], 1, EOS), T6, special=SPECIAL)
    assert torch.equal(judge_round(StrictRule(), v), StrictRule().judge(v))
    plain = view(with_token(T6[:6], 1, EOS), T6, anchors=[False] * 6)  # no special ids given: the rule's verdicts
    assert torch.equal(judge_round(LVSpecRule(2), plain), LVSpecRule(2).judge(plain))
    assert strict_on_special(torch.tensor([], dtype=torch.int8), view([], [1], special=SPECIAL)).numel() == 0


@pytest.mark.parametrize("name", ["lvspec", "fly", "fly_plus", "random"])
def test_every_built_rule_rejects_a_drafted_eos(name):
    """The built rule of each loose method (build_method), at settings where it would accept the mismatch."""
    rule = method(name, fly_window=2, random_accept=1.0).rule
    draft, target = with_token(T6[:6], 0, EOS), T6
    v = view(draft, target, anchors=[False] * 6, generator=torch.Generator().manual_seed(0), special=SPECIAL)
    assert rule.judge(v)[0] == LOOSE
    assert judge_round(rule, v)[0] == REJECT
