"""SpecVLM pruning of the drafter's video: the selection (pure tensors), the attention probe
against eager attention weights, pruned prefill at the original positions, `specvlm` == `ar`,
Self-SD, vocabulary padding and tokenizer refusal, for every family of conftest.FAMILIES."""

from types import SimpleNamespace

import pytest
import torch

from conftest import method
from lvspec_eval.adapters.loading import TokenizerMismatchError, check_same_tokenizer
from lvspec_eval.config import DecodeConfig
from lvspec_eval.config import VIDEO_FILLS
from lvspec_eval.pruning import (
    ALL_LAYERS,
    FILLS,
    VIDEO_KEEP_KEY,
    VideoPruning,
    bayer_rank,
    fill_linspace,
    keep_budget,
    select_video_tokens,
    stage_one,
    stage_two,
)

EOS = 151645
N_NEW = 30


def cfg(k=5, n=N_NEW):
    return DecodeConfig(max_new_tokens=n, eos_ids=(EOS,), num_draft_tokens=k)


def grid(frames, rows, cols):
    g = torch.stack(torch.meshgrid(torch.arange(frames), torch.arange(rows), torch.arange(cols), indexing="ij"), -1)
    return g.view(-1, 3)


# -- selection (pure tensors) -------------------------------------------------------------------
# SpecVLM's code (zju-jiyicheng/SpecVLM @ 4fcd84e, utils/utils.py drop_visual_tokens_specvlm; docs/baselines.md):
# B = int(Nv * keep); stage I: tokens by decreasing score until their sum reaches mass * total (the
# one reaching it included), at most B; stage II: available[linspace(0, m - 1, B - n1)] over the
# m remaining tokens in prompt order. Expected values below are worked out by hand from that.
@pytest.mark.parametrize("n,keep,expected", [(100, 0.1, 10), (129, 0.1, 12), (19, 0.1, 1), (5, 0.1, 1), (64, 1.0, 64),
                                             (7, 0.5, 3), (1, 0.01, 1), (100, 0.29, 29), (30, 0.1, 3)])
def test_keep_budget(n, keep, expected):
    assert keep_budget(n, keep) == expected  # floor(keep * Nv), at least 1


@pytest.mark.parametrize("fill", VIDEO_FILLS)
@pytest.mark.parametrize("keep", [0.01, 0.1, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("mass", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_selection_keeps_exactly_the_budget(keep, mass, fill):
    gen = torch.Generator().manual_seed(int(keep * 100 + mass * 10))
    coords = grid(6, 5, 7)  # 210 tokens, non-power-of-two grid
    att = torch.rand(coords.shape[0], generator=gen) ** 4
    kept = select_video_tokens(att, coords, keep, mass, fill)
    assert kept.numel() == keep_budget(210, keep)
    assert kept.unique().numel() == kept.numel() and kept.tolist() == sorted(kept.tolist())
    assert 0 <= int(kept.min()) and int(kept.max()) < 210


def test_fills_are_the_configs_choices():
    assert tuple(FILLS) == VIDEO_FILLS
    with pytest.raises(ValueError, match="video fill"):
        VideoPruning(keep=0.1, fill="random")
    with pytest.raises(ValueError, match="layer"):
        VideoPruning(keep=0.1, layer="last")


def test_stage_one_keeps_the_highest_attention_tokens_until_the_mass():
    att = torch.tensor([1.0, 40, 2, 25, 2, 20, 5, 5])  # sums to 100
    assert stage_one(att, budget=8, mass=0.40).tolist() == [1]  # 40 >= 40: the token reaching it counts
    assert stage_one(att, budget=8, mass=0.41).tolist() == [1, 3]  # 40 < 41 <= 65
    assert stage_one(att, budget=8, mass=0.65).tolist() == [1, 3]
    assert stage_one(att, budget=8, mass=0.85).tolist() == [1, 3, 5]
    assert stage_one(att, budget=2, mass=0.85).tolist() == [1, 3]  # capped by the budget
    assert stage_one(att, budget=8, mass=0.0).tolist() == []
    # with mass 1 the whole budget goes to the top-attention tokens
    top = select_video_tokens(att, grid(1, 2, 4), keep=0.5, mass=1.0)
    assert top.tolist() == sorted(torch.topk(att, 4).indices.tolist())


def test_fill_linspace_by_hand():
    coords = grid(5, 2, 2)  # 20 tokens
    # without 3 and 7 the 18 available tokens are 0 1 2 4 5 6 8 9 ... 19;
    # linspace(0, 17, 4) = 0, 5.67, 11.33, 17 -> 0 5 11 17 -> tokens 0 6 13 19
    assert fill_linspace(coords, torch.tensor([3, 7]), 4).tolist() == [0, 6, 13, 19]
    assert fill_linspace(coords, torch.tensor([3, 7]), 1).tolist() == [0]
    assert fill_linspace(coords, torch.tensor([3, 7]), 0).tolist() == []
    assert fill_linspace(coords, torch.zeros(0, dtype=torch.long), 20).tolist() == list(range(20))


def test_specvlm_selection_by_hand():
    """Nv = 20, keep 0.25: B = 5. Scores: token 7 = 30, token 3 = 20, the 18 others 2.5 (total 95).
    Stage I (mass 0.4 -> 38): 30 < 38, 30 + 20 = 50 >= 38 -> tokens 7, 3. Stage II, 3 picks over the
    18 others: linspace(0, 17, 3) = 0, 8.5, 17 -> 0 8 17 -> tokens 0, 10, 19."""
    coords = grid(5, 2, 2)
    att = torch.full((20,), 2.5)
    att[7], att[3] = 30.0, 20.0
    assert select_video_tokens(att, coords, keep=0.25, mass=0.4).tolist() == [0, 3, 7, 10, 19]
    # the defaults of VideoPruning are SpecVLM's (mass 0.4, every layer, linspace fill)
    pruning = VideoPruning(keep=0.25)
    assert (pruning.mass, pruning.layer, pruning.fill) == (0.4, ALL_LAYERS, "linspace")
    prefill = SimpleNamespace(video_coords=coords, video_attention=att)
    assert pruning.draft_inputs({"x": 1}, prefill)[VIDEO_KEEP_KEY].tolist() == [0, 3, 7, 10, 19]
    # mass 0: stage I is empty, linspace over all 20 (SpecVLM's uniform pruning):
    # linspace(0, 19, 5) = 0, 4.75, 9.5, 14.25, 19 -> 0 4 9 14 19
    assert select_video_tokens(att, coords, keep=0.25, mass=0.0).tolist() == [0, 4, 9, 14, 19]
    # mass 0.6 -> 57: 30, 50, then the 2.5s in prompt order (stable ties): 52.5, 55, 57.5 -> 5 tokens
    assert select_video_tokens(att, coords, keep=0.25, mass=0.6).tolist() == [0, 1, 2, 3, 7]


def test_highest_attention_tokens_survive_on_a_real_grid():
    coords = grid(8, 4, 4)
    att = torch.full((128,), 1e-3)
    hot = [5, 40, 77, 100, 126]
    att[hot] = torch.tensor([0.3, 0.25, 0.2, 0.15, 0.1])
    for fill in VIDEO_FILLS:
        kept = select_video_tokens(att, coords, keep=0.1, mass=0.5, fill=fill).tolist()
        assert len(kept) == 12
        assert {5, 40} <= set(kept)  # 0.3 + 0.25 covers half of the mass (total ~0.1 + 1.0)


def test_bayer_rank_is_the_ordered_dither_matrix():
    r, c = grid(1, 2, 2)[:, 1], grid(1, 2, 2)[:, 2]
    assert bayer_rank(r, c).view(2, 2).tolist() == [[0, 2], [3, 1]]
    g = grid(1, 4, 4)
    ranks = bayer_rank(g[:, 1], g[:, 2])
    assert sorted(ranks.tolist()) == list(range(16))


def test_stage_two_is_spatially_uniform():
    coords = grid(3, 4, 4)  # 3 frames of 4x4
    picks = stage_two(coords, torch.zeros(0, dtype=torch.long), 12, fill="dither")
    chosen = coords[picks]
    for f in range(3):  # 4 a frame, one in each 2x2 quadrant
        frame = chosen[chosen[:, 0] == f]
        assert len(frame) == 4
        assert sorted(((frame[:, 1] // 2) * 2 + frame[:, 2] // 2).tolist()) == [0, 1, 2, 3]
    # excluded (stage I) tokens are never picked again, and counts per frame differ by at most one
    exclude = torch.tensor([0, 1, 2, 3])
    picks = stage_two(coords, exclude, 7, fill="dither")
    assert not set(picks.tolist()) & set(exclude.tolist())
    per_frame = torch.bincount(coords[picks][:, 0], minlength=3)
    assert int(per_frame.max() - per_frame.min()) <= 1


# -- on tiny models of both families -------------------------------------------------------------
@pytest.fixture(scope="module")
def ar_runs(target, inputs):
    return [method("ar").decode(target, None, inp, cfg(), seed=0) for inp in inputs]


def _eager_twin(adapter):
    """The same checkpoint loaded with eager attention (returns attention weights)."""
    return type(adapter).load(adapter.name, dtype="float32", device_map="cpu", attn_implementation="eager",
                              max_num_frames=adapter.max_num_frames,
                              **({"min_pixels": adapter.min_pixels, "max_pixels": adapter.max_pixels}
                                 if hasattr(adapter, "min_pixels") else {}))


@pytest.mark.parametrize("layer", [0, -1, ALL_LAYERS])
def test_attention_probe_matches_eager_attention_weights(target, inputs, layer):
    """The probe (any attention backend; here sdpa) == eager attention weights of that layer,
    mean over heads and over the prompt rows after the video; ALL_LAYERS (SpecVLM's ranking) ==
    the mean of that over every decoder layer."""
    inp = inputs[0]
    _, pre = target.start(inp, attention_layer=layer)
    eager = _eager_twin(target)
    with torch.inference_mode():
        out = eager.model(**inp, output_attentions=True, use_cache=False,
                          **({"position_ids": _full_positions(eager, inp)} if hasattr(eager, "min_pixels") else {}))
    video_rows = (inp["input_ids"][0] == _video_token_id(target)).nonzero().view(-1)
    layers = range(len(out.attentions)) if layer == ALL_LAYERS else [layer]
    per_layer = [out.attentions[i][0][:, int(video_rows.max()) + 1:, :][:, :, video_rows].mean(dim=(0, 1))
                 for i in layers]  # each [Nvid] from eager weights [heads, S, S]
    ref = torch.stack(per_layer).mean(0)
    if layer == ALL_LAYERS:
        assert len(per_layer) > 1 and not torch.allclose(per_layer[0], per_layer[-1])
    assert pre.video_attention.shape == ref.shape
    assert torch.allclose(pre.video_attention, ref, atol=1e-5), (pre.video_attention - ref).abs().max()
    assert len(set(pre.video_attention.topk(5).indices.tolist())) == 5 and float(ref.std()) > 0


def _video_token_id(adapter) -> int:
    return int(adapter.model.config.video_token_id)


def _full_positions(adapter, inp):
    """Positions of the full prompt: M-RoPE [3, 1, S] for Qwen, [1, S] for LLaVA-OneVision."""
    if hasattr(adapter, "min_pixels"):
        pos, _ = adapter.model.model.get_rope_index(
            inp["input_ids"], mm_token_type_ids=inp["mm_token_type_ids"], video_grid_thw=inp["video_grid_thw"],
            second_per_grid_ts=inp.get("second_per_grid_ts"), attention_mask=inp.get("attention_mask"))
        return pos
    return torch.arange(inp["input_ids"].shape[1]).view(1, -1)


def test_pruned_prefill_keeps_the_original_positions(target, inputs):
    """A prefill on kept video tokens == the full prompt with the pruned tokens masked out of
    attention (full positions), and so are the next tokens fed after it: the drafter sees every
    kept token at its ORIGINAL position (M-RoPE 3D ids for Qwen, rope_delta grows by the pruned count)."""
    inp = inputs[1]
    ids = inp["input_ids"]  # [1, S]
    s = ids.shape[1]
    video_rows = (ids[0] == _video_token_id(target)).nonzero().view(-1)
    keep = torch.arange(0, video_rows.numel(), 4)  # every 4th video token
    sess, pre = target.start({**inp, VIDEO_KEEP_KEY: keep})
    assert pre.video_tokens_fed == keep.numel() and sess.length == s - video_rows.numel() + keep.numel()
    new = torch.tensor([1000, 2000, 3000])
    pruned_logits = torch.cat([pre.logits[None], sess.extend(new)])  # [4, V]

    # reference: one forward over prompt + new tokens, pruned keys masked for every query
    allowed = torch.ones(s + 3, dtype=torch.bool)
    allowed[video_rows] = False
    allowed[video_rows[keep]] = True
    mask = torch.tril(torch.ones(s + 3, s + 3, dtype=torch.bool)) & allowed.view(1, -1)
    pos = _full_positions(target, inp)
    extra = torch.arange(s, s + 3) + (int(pos.max()) + 1 - s)  # continue after the prompt's last position
    pos = torch.cat([pos, extra.view(1, 1, 3).expand(pos.shape[0], 1, 3) if pos.dim() == 3 else extra.view(1, 3)], -1)
    full = {k: v for k, v in inp.items() if k not in ("attention_mask",)}
    full["input_ids"] = torch.cat([ids, new.view(1, -1)], 1)
    if "mm_token_type_ids" in full:
        full["mm_token_type_ids"] = torch.cat([full["mm_token_type_ids"], torch.zeros(1, 3, dtype=torch.long)], 1)
    with torch.inference_mode():
        ref = target.model(**full, position_ids=pos, attention_mask=mask.view(1, 1, s + 3, s + 3),
                           use_cache=False).logits[0, s - 1:]
    assert torch.allclose(pruned_logits, ref, atol=1e-4, rtol=1e-4), (pruned_logits - ref).abs().max()


def test_specvlm_is_lossless_and_prunes(target, draft, inputs, ar_runs):
    specvlm = method("specvlm", draft_video_keep=0.1)
    assert specvlm.pruning == VideoPruning(keep=0.1)  # SpecVLM's own: attention of every layer, mass 0.4, linspace
    for inp, ar in zip(inputs, ar_runs):
        r = specvlm.decode(target, draft, inp, cfg(), seed=0)
        assert r.tokens == ar.tokens
        assert r.video_tokens == ar.video_tokens and r.video_tokens > 50
        assert r.draft_video_tokens == keep_budget(r.video_tokens, 0.1)
        assert ar.draft_video_tokens is None


def test_lvspec_with_pruning_lambda0_equals_sd_with_pruning(target, draft, inputs, ar_runs):
    pruned = dict(draft_video_keep=0.25, draft_video_mass=0.5, draft_video_layer=-1)
    sd = method("sd", **pruned).decode(target, draft, inputs[0], cfg(), seed=0)
    lv = method("lvspec", relevance_repr="embedding", anchor_rule="rank", relax_ratio=0.0, shift_window=0,
                **pruned).decode(target, draft, inputs[0], cfg(), seed=0)
    assert lv.tokens == sd.tokens == ar_runs[0].tokens
    assert lv.provenance == sd.provenance and lv.draft_video_tokens == sd.draft_video_tokens < sd.video_tokens


def test_self_sd_drafts_with_the_targets_weights_and_a_pruned_video(target, inputs, ar_runs):
    """Self-SD: the target adapter is its own drafter (one set of weights), the drafter session
    has its own cache over the pruned prompt; output == ar (with this project's pruning options)."""
    self_sd = method("sd", draft_pretrained="self", draft_video_mass=0.5, draft_video_layer=-1,
                     draft_video_fill="dither")  # Self-SD prunes the drafter's video to 10% by default
    assert self_sd.pruning == VideoPruning(keep=0.1, mass=0.5, layer=-1, fill="dither")
    sessions = []
    original_start = type(target).start

    def spy(self, inp, *a, **kw):
        out = original_start(self, inp, *a, **kw)
        sessions.append(out[0])
        return out

    type(target).start = spy
    try:
        r = self_sd.decode(target, target, inputs[2], cfg(), seed=0)
    finally:
        type(target).start = original_start
    assert r.tokens == ar_runs[2].tokens
    t_sess, d_sess = sessions
    assert t_sess.adapter is d_sess.adapter is target
    assert t_sess.cache is None and d_sess.cache is None  # both closed; they were distinct objects:
    assert r.draft_video_tokens == keep_budget(r.video_tokens, 0.1) < r.video_tokens
    # a pruned self-drafter is not the identical drafter: it accepts, but not everything
    assert 0 < r.accepted < r.proposed


def test_padded_vocab_drafter_is_compared_over_the_shared_range(target, inputs, ar_runs):
    """A drafter with the target's weights but more output rows, whose padding rows carry the
    highest logits, still proposes only shared-vocabulary tokens and gets everything accepted."""
    padded = type(target).load(target.name, dtype="float32", device_map="cpu", max_num_frames=target.max_num_frames,
                               **({"min_pixels": target.min_pixels, "max_pixels": target.max_pixels}
                                  if hasattr(target, "min_pixels") else {}))
    v = target.vocab_size
    padded.model.resize_token_embeddings(v + 128)
    assert padded.vocab_size == v + 128
    padded.model.get_output_embeddings().register_forward_hook(
        lambda _m, _i, out: torch.cat([out[..., :v], out[..., v:] + 1e4], -1))
    k = 5
    # drafting from the first round (the paper's schedule; under `auto` this short budget would first take
    # one plain target step: tests/test_schedule.py)
    r = method("sd", draft_schedule="fixed").decode(target, padded, inputs[0], cfg(k), seed=0)
    assert r.tokens == ar_runs[0].tokens
    full_rounds = (N_NEW - 1) // (k + 1)
    assert r.provenance.startswith("P" + ("E" * k + "B") * full_rounds)


def test_different_tokenizers_are_refused(qwen_target, llava_target, llava_draft):
    check_same_tokenizer(llava_target.tokenizer, llava_draft.tokenizer, "t", "d")  # same tokenizer, other vocab size
    assert llava_target.vocab_size != llava_draft.vocab_size
    with pytest.raises(TokenizerMismatchError, match=r"different tokenizers: vocabularies differ .*same family"):
        check_same_tokenizer(qwen_target.tokenizer, llava_target.tokenizer, "qwen", "llava")


@pytest.mark.parametrize("layer", [0, -1])
def test_verify_video_attention_matches_eager_attention_weights(target, inputs, ar_runs, layer):
    """relevance_repr=attention: the share of attention that each query of a K+1 verify block puts
    on the video tokens (probe on a cached sdpa session) == eager attention weights of a full
    forward over prompt + block, summed over video columns, mean over heads."""
    inp, block = inputs[1], torch.tensor(ar_runs[1].tokens[:6])
    session, pre = target.start(inp)
    video_rows = torch.nonzero(~pre.text_mask).view(-1)
    session.video_probe = (layer, video_rows)
    session.extend(block[:2])  # a first round, so the probe also reads keys the cache got after prefill
    session.extend(block[2:])
    got = session.last_video_attention
    eager = _eager_twin(target)
    full = dict(inp, input_ids=torch.cat([inp["input_ids"], block.view(1, -1)], 1),
                attention_mask=torch.ones(1, inp["input_ids"].shape[1] + 6, dtype=torch.long))
    if "mm_token_type_ids" in inp:
        full["mm_token_type_ids"] = torch.cat([inp["mm_token_type_ids"], torch.zeros(1, 6, dtype=torch.long)], 1)
    with torch.inference_mode():
        out = eager.model(**full, output_attentions=True, use_cache=False,
                          **({"position_ids": _full_positions(eager, full)} if hasattr(eager, "min_pixels") else {}))
    ref = out.attentions[layer][0][:, -4:, :][:, :, video_rows].sum(-1).mean(0)  # [4]
    assert got.shape == ref.shape == (4,)
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    assert float(ref.min()) > 0


def test_attention_relevance_lambda0_is_ar_and_relaxed_flags_both(target, draft, inputs, ar_runs):
    """lvspec with relevance_repr=attention: lambda 0 flags every position (== ar); lambda 0.7 flags
    both anchors and fillers and still adds up."""
    def attention(relax, w):
        built = method("lvspec", relevance_repr="attention", relevance_layer=-1, anchor_rule="rank",
                       relax_ratio=relax, shift_window=w)
        assert built.probe_layer == -1 and built.capture_layer is None
        return built

    inp = inputs[0]
    strict = attention(0.0, 0).decode(target, draft, inp, cfg(), seed=0)
    assert strict.tokens == ar_runs[0].tokens and set(strict.anchor_flags) <= {"a", "-"}
    relaxed = attention(0.7, 2).decode(target, draft, inp, cfg(), seed=0)
    assert {"a", "f"} <= set(relaxed.anchor_flags)
    assert relaxed.accepted == sum(relaxed.accepted_per_position) == sum(c in "ELS" for c in relaxed.provenance)
