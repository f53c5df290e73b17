"""Acceptance rules on hand-built token/logit tables (no models)."""

import math

import pytest
import torch

from conftest import method
from lvspec_eval.acceptance import (
    EXACT, LOOSE, REJECT, SHIFT, FlyPlusRule, FlyRule, LVSpecRule, RandomRule, RoundView, StrictRule,
    accepted_length, shift_hits, top3_entropy,
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


def view(draft, target, anchors=None, confident=None, generator=None):
    d, t = torch.tensor(draft), torch.tensor(target)
    return RoundView(d, t, logits_for(target, confident), anchors=None if anchors is None else torch.tensor(anchors),
                     generator=generator)


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


def test_top3_entropy():
    peaked = logits_for([3], confident={0})
    flat = logits_for([3])
    assert top3_entropy(peaked).item() < 0.01
    assert top3_entropy(flat).item() == pytest.approx(math.log(3), abs=0.01)


def test_fly_plus_entropy_gate():
    # mismatch at 1 where the target is unsure -> loose; mismatch at 2 where confident -> reject
    v = view([1, 9, 9, 4], [1, 2, 3, 4, 5], confident={2})
    assert codes(FlyPlusRule(0.3).judge(v))[:3] == [EXACT, LOOSE, REJECT]


def test_fly_window_requires_future_matches():
    # W = 3: a mismatch at i is accepted if d_{i+1}, d_{i+2} match and entropy is high
    t = [1, 2, 3, 4, 5, 6, 7]
    good = view([1, 9, 3, 4, 5, 6], t)
    assert codes(FlyRule(window=3).judge(good))[:2] == [EXACT, LOOSE]
    bad = view([1, 9, 3, 8, 5, 6], t)  # d_3 mismatches inside the window of position 1
    assert codes(FlyRule(window=3).judge(bad))[1] == REJECT


def test_fly_window_near_block_end_is_rejected():
    t = [1, 2, 3, 4, 5, 6, 7]
    # mismatch at position 4 (0-based) of K=6: only one draft token follows; W-1 = 2 needed
    v = view([1, 2, 3, 4, 9, 6], t)
    out = FlyRule(window=3).judge(v)
    assert codes(out)[4] == REJECT
    assert accepted_length(out) == 4
    # at position 3, exactly W-1 = 2 tokens follow and both match -> accepted
    v2 = view([1, 2, 3, 9, 5, 6], t)
    assert codes(FlyRule(window=3).judge(v2))[3] == LOOSE
    # W = 1: no future requirement, FLy == FLy+
    assert torch.equal(FlyRule(window=1).judge(v), FlyPlusRule().judge(v))


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
