"""The draft schedule (`draft_schedule`, lvspec_eval/engine/schedule.py) and the engine's cache reserve.

Under `auto` (the default) a request with max_new_tokens <= short_answer_tokens decodes its first step
with the target alone and starts the drafter only if the answer goes on; above it, and always under
`fixed` (the paper's), the drafter starts at prefill. Checked on both families: lossless methods stay
exactly `ar` (identical, random and scripted drafters), a one-token answer never starts the drafter,
the rounds and per-position counts are exact, the params record the schedule, and both caches are
allocated once for prompt + max_new_tokens + K + 1 tokens (never regrown)."""

import pytest
import torch

from conftest import method
from lvspec_eval.config import DEFAULT_SHORT_ANSWER_TOKENS, ArgsError, DecodeConfig, LVSpecArgs
from lvspec_eval.engine.schedule import AutoSchedule, FixedSchedule
from testbed.fixtures.scripted import ScriptedDrafter, expected_schedule

EOS = 151645
SHORT = 20  # a short-answer budget (<= DEFAULT_SHORT_ANSWER_TOKENS)


def cfg(n=SHORT, k=4, eos=(EOS,)):
    return DecodeConfig(max_new_tokens=n, eos_ids=eos, num_draft_tokens=k)


class Recording:
    """An adapter as the engine sees it, recording each `start`'s keyword arguments and, per session,
    the key buffers of its cache at prefill and when the engine closes it."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.starts, self.buffers = [], []

    def __getattr__(self, name):
        return getattr(self.adapter, name)

    def start(self, inputs, **kwargs):
        session, prefill = self.adapter.start(inputs, **kwargs)
        self.starts.append(kwargs)
        ptrs = lambda: [layer.key_buffer.data_ptr() for layer in session.cache.layers]  # noqa: E731
        caps = lambda: [layer.capacity for layer in session.cache.layers]  # noqa: E731
        entry = {"prompt": session.length, "at_prefill": ptrs(), "capacity": caps()}
        self.buffers.append(entry)
        close = session.close

        def recorded_close():
            entry.update(at_close=ptrs(), length=session.cache.get_seq_length())
            close()

        session.close = recorded_close
        return session, prefill


# -- the schedule objects and the args (no models) ----------------------------------------------
def test_auto_holds_the_drafter_back_only_on_short_answer_requests():
    auto = AutoSchedule(short_answer_tokens=32)
    assert [auto.solo_tokens(n) for n in (1, 8, 32, 33, 256)] == [2, 2, 2, 1, 1]
    assert [FixedSchedule().solo_tokens(n) for n in (1, 8, 256)] == [1, 1, 1]
    assert AutoSchedule(short_answer_tokens=0).solo_tokens(1) == 1  # 0: never lazy


def test_the_builder_makes_the_schedule_of_the_args():
    assert method("ar").schedule is None
    assert method("sd").schedule == AutoSchedule(short_answer_tokens=DEFAULT_SHORT_ANSWER_TOKENS)
    assert method("lvspec", short_answer_tokens=8).schedule == AutoSchedule(short_answer_tokens=8)
    assert method("specvlm", draft_schedule="fixed").schedule == FixedSchedule()
    assert method("sd") != method("sd", draft_schedule="fixed")


def test_params_record_which_schedule_ran():
    assert LVSpecArgs(method="sd").rule_params() == {"num_draft_tokens": 10, "draft_schedule": "auto",
                                                     "short_answer_tokens": DEFAULT_SHORT_ANSWER_TOKENS}
    assert LVSpecArgs(method="sd", draft_schedule="fixed").rule_params() == {"num_draft_tokens": 10,
                                                                             "draft_schedule": "fixed"}
    assert LVSpecArgs(method="ar").rule_params() == {}


@pytest.mark.parametrize("kwargs,message", [({"draft_schedule": "lazy"}, "draft_schedule='lazy' is not valid"),
                                            ({"short_answer_tokens": -1}, "short_answer_tokens=-1 is out of range")])
def test_bad_schedule_args_are_refused(kwargs, message):
    with pytest.raises(ArgsError, match=message):
        LVSpecArgs.from_kwargs(method="sd", **kwargs)


# -- the engine, both families --------------------------------------------------------------------
@pytest.fixture(scope="module")
def ar_runs(target, inputs):
    return [method("ar").decode(target, None, inp, cfg(), seed=0) for inp in inputs]


def test_short_request_drafts_after_one_plain_step_and_stays_lossless(target, draft, inputs, ar_runs):
    sd = method("sd")
    for inp, ar in zip(inputs, ar_runs):
        assert len(ar.tokens) == SHORT  # the random tiny models do not stop early here
        for drafter in (target, draft):  # identical drafter, random drafter
            r = sd.decode(target, drafter, inp, cfg(), seed=0)
            assert r.tokens == ar.tokens
            assert r.provenance[:2] == "PT" and r.per_step_drafted[0] == 0 and r.per_step_drafted[1] > 0
        same = sd.decode(target, target, inp, cfg(k=4), seed=0)
        assert same.provenance.startswith("PT" + "EEEEB" * 3)  # the identical drafter accepts all once it starts


@pytest.mark.parametrize("schedule,solo", [("auto", 2), ("fixed", 1)])
@pytest.mark.parametrize("k,wrong", [(4, {1, 2, 7, 8, 9}), (3, {2, 5, 6, 12}), (10, {4})])
def test_scripted_drafter_exact_counts_under_each_schedule(target, inputs, ar_runs, schedule, solo, k, wrong):
    inp, ar = inputs[1], ar_runs[1]
    drafter = ScriptedDrafter(ar.tokens, wrong, vocab_size=target.vocab_size)
    r = method("sd", draft_schedule=schedule).decode(target, drafter, inp, cfg(k=k), seed=0)
    assert r.tokens == ar.tokens
    exp = expected_schedule(SHORT, k, wrong, solo=solo)
    assert (r.rounds, r.accepted_exact, r.accepted_per_position) == (exp["rounds"], exp["accepted"],
                                                                     exp["accepted_per_position"])
    assert r.per_step_drafted == exp["per_step_drafted"] and r.per_step_accepted == exp["per_step_accepted"]
    # a late drafter's first forward feeds the answer's first `solo` tokens at once; every later one 1-2 tokens
    assert len(drafter.starts) == 1 and drafter.fed[0] == solo


def test_long_request_is_the_fixed_schedule_token_for_token(target, inputs):
    n = DEFAULT_SHORT_ANSWER_TOKENS + 1
    ar = method("ar").decode(target, None, inputs[0], cfg(n=n), seed=0)
    wrong = {3, 9, 10, 20}
    runs = {}
    for schedule in ("auto", "fixed"):
        drafter = ScriptedDrafter(ar.tokens, wrong, vocab_size=target.vocab_size)
        runs[schedule] = method("sd", draft_schedule=schedule).decode(target, drafter, inputs[0], cfg(n=n), seed=0)
    a, f = runs["auto"], runs["fixed"]
    assert a.tokens == f.tokens == ar.tokens and a.provenance == f.provenance and a.rounds == f.rounds
    assert a.per_step_drafted == f.per_step_drafted == expected_schedule(n, 4, wrong)["per_step_drafted"]


@pytest.mark.parametrize("name,extra", [("sd", {}), ("specvlm", {}), ("lvspec", {}), ("fly", {}), ("random", {}),
                                        ("lvspec", {"relevance_repr": "embedding", "draft_video_keep": 0.1})])
def test_one_token_answer_never_starts_the_drafter(target, draft, inputs, ar_runs, name, extra):
    """An answer that ends after the target's first step (a letter, then EOS) costs what `ar` costs:
    no drafter prefill, no pruning ranking, no anchor finder; one plain round, as `ar`."""
    inp, ar = inputs[0], ar_runs[0]
    eos = (ar.tokens[1],)  # the answer's second token plays EOS: ar stops after one step
    base = method("ar").decode(target, None, inp, cfg(eos=eos), seed=0)
    assert base.tokens == ar.tokens[:2] and base.rounds == 1
    recorder = Recording(draft)
    r = method(name, **extra).decode(target, recorder, inp, cfg(eos=eos), seed=0)
    assert r.tokens == base.tokens and r.provenance == "PT" and r.rounds == 1 and r.proposed == 0
    assert recorder.starts == [] and r.draft_video_tokens is None and r.stop_reason == "eos"
    fixed = Recording(draft)
    f = method(name, draft_schedule="fixed", **extra).decode(target, fixed, inp, cfg(eos=eos), seed=0)
    assert len(fixed.starts) == 1 and f.proposed >= 1 and f.tokens == base.tokens


def test_a_late_pruned_drafter_sees_the_same_video_as_at_prefill(target, draft, inputs, ar_runs):
    """specvlm under `auto` ranks the video from the target's prefill attention when the drafter starts
    (after a plain step): the same kept tokens, and the same output, as ranking it at prefill."""
    inp, ar = inputs[2], ar_runs[2]
    late, early = Recording(draft), Recording(draft)
    r_late = method("specvlm").decode(target, late, inp, cfg(), seed=0)
    r_early = method("specvlm", draft_schedule="fixed").decode(target, early, inp, cfg(), seed=0)
    assert r_late.tokens == r_early.tokens == ar.tokens
    assert r_late.draft_video_tokens == r_early.draft_video_tokens < r_late.video_tokens
    assert late.buffers[0]["prompt"] == early.buffers[0]["prompt"] < inp["input_ids"].shape[-1]


def test_lossy_methods_count_up_under_the_lazy_start(target, draft, inputs):
    for name in ("lvspec", "fly", "random"):
        r = method(name).decode(target, draft, inputs[1], cfg(), seed=3)
        assert len(r.tokens) == len(r.provenance) == len(r.anchor_flags) <= SHORT
        assert r.provenance[:2] == "PT" and r.per_step_drafted[0] == 0
        assert r.rounds == len(r.per_step_drafted) and r.proposed == sum(r.per_step_drafted)
        assert r.accepted == sum(r.per_step_accepted) == sum(r.accepted_per_position)
        assert len(r.tokens) - 1 == r.rounds + r.accepted  # every round emits its accepted drafts + one token


@pytest.mark.parametrize("n,schedule", [(SHORT, "auto"), (40, "auto"), (SHORT, "fixed")])
def test_both_caches_are_allocated_once_for_the_whole_decode(target, draft, inputs, n, schedule):
    """decode passes reserve = max_new_tokens + K + 1 to both prefills; with the adapters' default reserve
    shrunk to 1 token a regrowth would show as a new key buffer."""
    k = 4
    t, d = Recording(target), Recording(draft)
    saved = (target.cache_reserve, draft.cache_reserve)
    target.cache_reserve = draft.cache_reserve = 1
    try:
        r = method("sd", draft_schedule=schedule).decode(t, d, inputs[0], cfg(n=n, k=k), seed=0)
    finally:
        target.cache_reserve, draft.cache_reserve = saved
    assert len(r.tokens) == n
    for rec in (t, d):
        assert [s["reserve"] for s in rec.starts] == [n + k + 1]
        entry = rec.buffers[0]
        assert entry["at_close"] == entry["at_prefill"]  # no layer reallocated its buffer
        assert set(entry["capacity"]) == {entry["prompt"] + n + k + 1}
        assert entry["length"] <= entry["prompt"] + n + k + 1


def test_profile_keeps_probe_time_out_of_the_forward_time(target, draft, inputs):
    """relevance_repr=attention probes every verify forward: with profile=True its time is reported apart
    (engine overhead), and forwards + probes never exceed the decode time they are part of."""
    r = method("lvspec", relevance_repr="attention").decode(target, draft, inputs[0], cfg(n=40), seed=0,
                                                             profile=True)
    assert r.probe_s > 0 and r.target_forward_s > 0 and r.draft_forward_s > 0
    assert r.target_forward_s + r.draft_forward_s + r.probe_s <= r.decode_s
    plain = method("sd").decode(target, draft, inputs[0], cfg(n=40), seed=0, profile=True)
    assert plain.probe_s == 0.0


def test_a_lazy_prefill_ranking_read_later_equals_one_read_at_once(target, inputs):
    """The prefill's attention probe computes when first read, from the first L keys of the cache: reading
    it after the session has grown gives exactly the ranking read right after the prefill."""
    inp = inputs[1]
    _, now = target.start(inp, attention_layer="all")
    at_once = now.video_attention.clone()
    session, later = target.start(inp, attention_layer="all")
    session.extend(torch.tensor([1000, 1001, 1002]))
    session.extend(torch.tensor([1003]))
    assert torch.equal(later.video_attention, at_once) and at_once.numel() > 0
