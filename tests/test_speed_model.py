"""The speed model's formulas (benchmarks/measure.py, docs/speed.md) on hand-made rounds and costs: the
per-round sum, the tokens a round's first drafter step feeds, and its reduction to the closed forms.
No timing is measured here."""

import pytest

from benchmarks.measure import cost_model, leviathan, per_token_acceptance, predicted_decode_s

K = 4
COSTS = {"ar_step_s": 10.0, "draft_step_s": 1.0, "draft_first_s": {1: 1.5, 2: 2.0, 3: 2.5},
         "target_block_s": {1: 11.0, 2: 12.0, 3: 13.0, 4: 14.0, 5: 15.0}}


def test_ar_is_rounds_times_its_step():
    assert predicted_decode_s([0] * 7, [0] * 7, COSTS) == 7 * 10.0


def test_each_round_pays_its_block_and_its_drafter_steps():
    # round 1: 4 drafted, 2 accepted -> first step feeds 1 token (the prefill's), next round feeds 1 (the correction)
    # round 2: 4 drafted, all accepted -> next round's first step feeds d_K and the bonus: 2 tokens
    # round 3: 3 drafted (EOS drafted early), first step 2 tokens
    drafted, accepted = [4, 4, 3], [2, 4, 1]
    expected = (15.0 + 1.5 + 3 * 1.0) + (15.0 + 1.5 + 3 * 1.0) + (14.0 + 2.0 + 2 * 1.0)
    assert predicted_decode_s(drafted, accepted, COSTS) == expected


def test_rounds_before_the_drafter_starts_add_to_its_first_feed():
    # draft_schedule=auto on a short answer: one plain target step, then the drafter feeds both answer tokens
    assert predicted_decode_s([0, 4], [0, 1], COSTS) == 11.0 + (15.0 + 2.0 + 3 * 1.0)
    # a wider feed than measured is costed at the widest measured one
    assert predicted_decode_s([0, 0, 0, 4], [0, 0, 0, 1], COSTS) == 3 * 11.0 + (15.0 + 2.5 + 3 * 1.0)


@pytest.mark.parametrize("accepted", [0, 1, 3])
def test_constant_rounds_reduce_to_the_closed_form(accepted):
    """Every round drafts K and accepts `accepted` < K (each first step feeds one token, costed t_D):
    T_ar / T_method = (tau + 1) t_ar / (K t_D + t_T(K+1)) with tau = accepted."""
    costs = dict(COSTS, draft_first_s={1: 1.0, 2: 2.0, 3: 2.5})
    rounds = 6
    n = rounds * (accepted + 1)  # tokens after the prefill's: one ar round each
    ratio = predicted_decode_s([0] * n, [0] * n, costs) / predicted_decode_s([K] * rounds, [accepted] * rounds, costs)
    assert ratio == pytest.approx(cost_model(accepted, K, 10.0, 1.0, 15.0), rel=1e-12)


def test_leviathan_is_the_closed_form_with_a_one_step_verify():
    """With t_T(K+1) = t_ar and t_D = c t_ar, the closed form at tau = sum a^i (i = 1..K) is Leviathan's."""
    for a in (0.3, 0.6, 0.9):
        tau = sum(a**i for i in range(1, K + 1))
        assert per_token_acceptance(tau, K) == pytest.approx(a, abs=1e-9)
        assert cost_model(tau, K, 1.0, 0.2, 1.0) == pytest.approx(leviathan(a, K, 0.2), rel=1e-9)
