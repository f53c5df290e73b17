"""Acceptance rules on hand-built token/logit tables (no models)."""

import math

import pytest
import torch

from lvspec_eval.acceptance import (
    EXACT, LOOSE, REJECT, SHIFT, FlyPlusRule, FlyRule, LVSpecRule, RandomRule, RoundView, StrictRule,
    accepted_length, build_rule, judge_round, rank_anchor_count, shift_hits, strict_on_special, top3_entropy,
)
from lvspec_eval.config import LVSpecArgs
from lvspec_eval.relevance import AnchorSelector, RelevanceScorer

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
    assert AnchorSelector("rank", 0.0, "both").select(scores).all()
    sel = AnchorSelector("quantile", 0.0, "both", history=torch.tensor([0.0, 0.9, -1.0]))
    assert sel.select(scores).all()


def test_rank_rule_counts_and_order():
    assert rank_anchor_count(0.7, 10) == 3
    assert rank_anchor_count(0.0, 10) == 10
    assert rank_anchor_count(1.0, 10) == 0
    assert rank_anchor_count(0.7, 4) == 2  # ceil(1.2)
    sel = AnchorSelector("rank", 0.5, "both")
    assert sel.select(torch.tensor([0.1, 0.9, 0.3, 0.8])).tolist() == [False, True, False, True]


def test_quantile_rule_uses_history_and_observes():
    sel = AnchorSelector("quantile", 0.5, "both", history=torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))
    # median of history = 2.0
    assert sel.select(torch.tensor([1.9, 2.0, 3.5])).tolist() == [False, True, True]
    sel.observe(torch.tensor([10.0, 10.0, 10.0, 10.0]))  # median of history now 4.0
    assert sel.select(torch.tensor([3.5, 4.0])).tolist() == [False, True]


def test_anchor_side():
    sd, st = torch.tensor([0.1, 0.9]), torch.tensor([0.8, 0.2])
    assert AnchorSelector("rank", 0.5, "draft").position_scores(sd, st).tolist() == sd.tolist()
    assert AnchorSelector("rank", 0.5, "target").position_scores(sd, st).tolist() == st.tolist()
    assert AnchorSelector("rank", 0.5, "both").position_scores(sd, st).tolist() == pytest.approx([0.8, 0.9])


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
    assert build_rule(LVSpecArgs(method="ar")) is None
    assert isinstance(build_rule(LVSpecArgs(method="sd")), StrictRule)
    assert isinstance(build_rule(LVSpecArgs(method="specvlm")), StrictRule)
    assert isinstance(build_rule(LVSpecArgs(method="lvspec")), LVSpecRule)
    assert isinstance(build_rule(LVSpecArgs(method="fly")), FlyRule)
    assert isinstance(build_rule(LVSpecArgs(method="fly_plus")), FlyPlusRule)
    assert isinstance(build_rule(LVSpecArgs(method="random")), RandomRule)


def test_target_prob_rule_flags_where_the_target_rejects_the_draft_token():
    """anchor_rule=target_prob: a filler where p_T(d) >= (1 - lambda) p_T(t); lambda = 0 flags every
    mismatch (LVSpec == SD); lambda = 1 flags nothing; scores are log p_T(t) - log p_T(d)."""
    from lvspec_eval.relevance import build_anchor_finder

    t = torch.tensor([3, 5, 7, 9])
    logits = torch.full((4, V), -10.0)
    logits[0, 3] = 0.0                       # exact position: d_1 = t_1
    logits[1, 5], logits[1, 6] = 0.0, -0.1   # d_2 = 6 nearly as likely as t_2 (ratio 0.905)
    logits[2, 7], logits[2, 8] = 0.0, -1.0   # d_3 = 8: ratio e^-1 = 0.368
    logits[3, 9] = 0.0                       # bonus row
    d = torch.tensor([3, 6, 8])

    def flags(lam):
        finder = build_anchor_finder(visual=None, prompt_reps=None, top_n=10, rule="target_prob", relax_ratio=lam,
                                     side="both", repr_kind="attention", embed=lambda x: x)
        return finder.round(d, t, None, logits)

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
        build_anchor_finder(visual=None, prompt_reps=None, top_n=10, rule="target_prob", relax_ratio=0.5, side="both",
                            repr_kind="attention", embed=lambda x: x).round(d, t, None)


# -- EOS and special tokens are always strict (one guard for every rule: acceptance.judge_round) ------------
EOS, VSTART = 15, 14  # stand-ins for <|im_end|> and <|vision_start|>
SPECIAL = [VSTART, EOS]
T6 = [1, 2, 3, 4, 5, 6, 7]  # target t_1..t_7 of a K = 6 round; every row a near-tie (the target is unsure)


def loose_rules():
    """Each loose rule set up so that, without the guard, it accepts every mismatch of the tables below."""
    return {
        "lvspec (fillers)": (LVSpecRule(shift_window=2), [False] * 6),
        "lvspec (anchors, shift)": (LVSpecRule(shift_window=2), [True] * 6),
        "fly": (FlyRule(window=2), None),
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


@pytest.mark.parametrize("method", ["lvspec", "fly", "fly_plus", "random"])
def test_every_built_rule_rejects_a_drafted_eos(method):
    """build_rule's rule for each loose method, at settings where it would accept the mismatch."""
    rule = build_rule(LVSpecArgs(method=method, fly_window=2, random_accept=1.0))
    draft, target = with_token(T6[:6], 0, EOS), T6
    v = view(draft, target, anchors=[False] * 6, generator=torch.Generator().manual_seed(0), special=SPECIAL)
    assert rule.judge(v)[0] == LOOSE
    assert judge_round(rule, v)[0] == REJECT
