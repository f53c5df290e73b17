"""`attention_probs`, the one function behind both attention probes, against a plain reference
(keys repeated per query head, a full causal mask, float64): pure tensors, no model. The probes
against a model's eager attention weights are in tests/test_pruning.py."""

import pytest
import torch

from lvspec_eval.adapters.probes import attention_probs


def reference(queries, keys, query_pos, scaling):
    h, kvh = queries.shape[1], keys.shape[1]
    k = keys[0].double().repeat_interleave(h // kvh, dim=0)  # [h, L, D]
    scores = queries[0].double() @ k.transpose(-1, -2) * scaling  # [h, Q, L]
    future = torch.arange(keys.shape[2]).view(1, -1) > query_pos.view(-1, 1)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (6, 1), (3, 3)])
@pytest.mark.parametrize("rows", ["verify block", "prompt tail", "one token"])
def test_attention_probs_match_the_reference(heads, kv_heads, rows):
    gen = torch.Generator().manual_seed(heads * 10 + kv_heads)
    length, d = 50, 8
    query_pos = {"verify block": torch.arange(39, 50), "prompt tail": torch.arange(30, 50),
                 "one token": torch.tensor([49])}[rows]
    queries = torch.randn(1, heads, query_pos.numel(), d, generator=gen)
    keys = torch.randn(1, kv_heads, length, d, generator=gen)
    got = attention_probs(queries, keys, query_pos, d ** -0.5)
    assert got.dtype == torch.float32 and got.shape == (heads, query_pos.numel(), length)
    assert torch.allclose(got.double(), reference(queries, keys, query_pos, d ** -0.5), atol=1e-6)
    assert torch.allclose(got.sum(-1), torch.ones(heads, query_pos.numel()))
    assert bool((got[:, :, int(query_pos[-1]) + 1:] == 0).all()) and bool((got[:, 0, int(query_pos[0])] > 0).all())


def test_attention_probs_in_bfloat16_are_float32_and_close():
    gen = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(1, 4, 5, 16, generator=gen), torch.randn(1, 2, 40, 16, generator=gen)
    query_pos = torch.arange(35, 40)
    got = attention_probs(queries.bfloat16(), keys.bfloat16(), query_pos, 0.25)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), reference(queries, keys, query_pos, 0.25), atol=2e-2)
