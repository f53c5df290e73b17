"""The adapters' pre-allocated KV cache: bit for bit the logits of transformers' DynamicCache (float32, both
families, sdpa and eager; prefill, steps, block, crop, extend, pruned prefill, regrowth), and no new key
buffer per decode step."""

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from lvspec_eval.adapters.cache import PreallocatedCache, PreallocatedLayer
from lvspec_eval.pruning import VIDEO_KEEP_KEY


# -- the layer alone (pure tensors) ----------------------------------------------------------------
def test_layer_matches_dynamic_layer_through_updates_crops_and_growth():
    gen = torch.Generator().manual_seed(0)
    ours, ref = PreallocatedLayer(reserve=3), DynamicLayer()
    for n, drop in [(7, 0), (1, 0), (4, 2), (1, 0), (6, 5), (9, 0), (1, 1), (2, 0)]:  # several regrowths
        k, v = torch.randn(1, 2, n, 4, generator=gen), torch.randn(1, 2, n, 4, generator=gen)
        got, want = ours.update(k, v), ref.update(k, v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert ours.get_seq_length() == ref.get_seq_length() and ours.get_mask_sizes(3) == ref.get_mask_sizes(3)
        ours.crop(-drop)
        ref.crop(-drop)
        assert torch.equal(ours.keys, ref.keys) and torch.equal(ours.values, ref.values)
        assert ours.capacity >= ours.get_seq_length()
    with pytest.raises(ValueError, match="negative"):
        ours.crop(2)


def test_layer_writes_in_place_within_capacity():
    layer = PreallocatedLayer(reserve=8)
    layer.update(torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4))
    buffer = layer.key_buffer.data_ptr()
    for _ in range(8):
        keys, _ = layer.update(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))
        assert layer.key_buffer.data_ptr() == buffer and keys.data_ptr() == buffer  # a view of the buffer
    layer.update(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))  # past the capacity: one regrowth
    assert layer.key_buffer.data_ptr() != buffer and layer.get_seq_length() == 14


# -- on tiny models of both families ---------------------------------------------------------------
def _run(adapter, inp, toks, reserve=None):
    """Prefill, 3 steps, a 6-token block, crop 4, re-extend 4: every logit row, stacked."""
    session, pre = adapter.start(inp, reserve=reserve)
    rows = [pre.logits[None]]
    for t in toks[:3]:
        rows.append(session.extend(torch.tensor([t])))
    rows.append(session.extend(torch.tensor(toks[3:9])))
    session.crop(session.length - 4)
    rows.append(session.extend(torch.tensor(toks[5:9])))
    rows.append(session.extend(torch.tensor(toks[9:10])))
    return session, torch.cat(rows)  # [1 + 3 + 6 + 4 + 1, V]


def _tokens(adapter, inp, n=10):
    session, pre = adapter.start(inp)
    toks = [int(pre.logits.argmax())]
    for _ in range(n - 1):
        toks.append(int(session.extend(torch.tensor(toks[-1:]))[-1].argmax()))
    return toks


def _eager_twin(adapter):
    return type(adapter).load(adapter.name, dtype="float32", device_map="cpu", attn_implementation="eager",
                              max_num_frames=adapter.max_num_frames,
                              **({"min_pixels": adapter.min_pixels, "max_pixels": adapter.max_pixels}
                                 if hasattr(adapter, "min_pixels") else {}))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logits_equal_the_dynamic_cache(target, inputs, attn, monkeypatch):
    adapter = target if attn == "sdpa" else _eager_twin(target)
    inp = inputs[0]
    toks = _tokens(adapter, inp)
    monkeypatch.setattr(adapter, "cache_kind", "dynamic")
    ref_session, ref = _run(adapter, inp, toks)
    assert type(ref_session.cache).__name__ == "DynamicCache"
    monkeypatch.setattr(adapter, "cache_kind", "preallocated")
    for reserve in (None, 2):  # 2: the buffers regrow during the steps
        session, got = _run(adapter, inp, toks, reserve=reserve)
        assert isinstance(session.cache, PreallocatedCache)
        assert torch.equal(got, ref), (got - ref).abs().max()  # bit for bit
        assert session.cache.get_seq_length() == ref_session.cache.get_seq_length() == session.length


def test_pruned_prefill_logits_equal_the_dynamic_cache(target, inputs, monkeypatch):
    inp = inputs[1]
    video_rows = (inp["input_ids"][0] == int(target.model.config.video_token_id)).nonzero().view(-1)
    pruned = {**inp, VIDEO_KEEP_KEY: torch.arange(0, video_rows.numel(), 3)}
    toks = _tokens(target, inp)
    monkeypatch.setattr(target, "cache_kind", "dynamic")
    _, ref = _run(target, pruned, toks)
    monkeypatch.setattr(target, "cache_kind", "preallocated")
    _, got = _run(target, pruned, toks)
    assert torch.equal(got, ref), (got - ref).abs().max()  # bit for bit


def test_a_decode_step_allocates_no_new_key_buffer(target, inputs):
    session, pre = target.start(inputs[0])
    layers = session.cache.layers
    assert all(isinstance(layer, PreallocatedLayer) for layer in layers)
    pointers = [layer.key_buffer.data_ptr() for layer in layers]
    tok = int(pre.logits.argmax())
    for _ in range(12):  # steps, blocks and crops inside the reserve
        tok = int(session.extend(torch.tensor([tok]))[-1].argmax())
        session.extend(torch.tensor([tok] * 5))
        session.crop(session.length - 5)
        assert [layer.key_buffer.data_ptr() for layer in layers] == pointers
        assert all(layer.keys.data_ptr() == layer.key_buffer.data_ptr() for layer in layers)
    assert session.cache.get_seq_length() == session.length == inputs[0]["input_ids"].shape[1] + 12
