"""A KV cache that does not copy itself per forward.

transformers' `DynamicCache` appends each forward's keys and values with `torch.cat`, which copies
the whole cache of every layer on every decode step: the step time grows with the context
(benchmarks/cache_scaling.py, reports/cache_scaling.md). `PreallocatedCache` keeps, per attention
layer, one key and one value buffer with room to spare: `update` writes the new states in place and
returns views of the filled prefix, `crop` only moves the length, and a full buffer grows by a
quarter of its length at least (amortised: a few token-copies per token, never the whole cache per
step). The first buffer holds the prefill plus `reserve` tokens, so a decode that knows its length
(prompt + max_new_tokens + K + 1) never regrows.

It speaks transformers 5.x's `Cache` / `CacheLayerMixin` interface (`update`, `get_seq_length`,
`get_mask_sizes`, `crop`, `layers[i].keys`) for full-attention layers; layers of other kinds
(sliding window, linear attention) get transformers' own dynamic layer. Batch size 1, no beam
search, no offloading.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from transformers.cache_utils import DYNAMIC_LAYER_TYPE_MAPPING, Cache, CacheLayerMixin, get_layer_types_and_kwargs

#: tokens allocated beyond the prefill when the caller gives no capacity
DEFAULT_RESERVE = 512


class PreallocatedLayer(CacheLayerMixin):
    """One attention layer's keys and values in buffers [B, kv_heads, capacity, D] (after rotary).

    `keys` / `values` are views of the filled prefix [B, kv_heads, length, D], refreshed by every
    `update` and `crop` (transformers and the probes read them there)."""

    is_croppable = True
    is_sliding = False
    is_compileable = False

    def __init__(self, reserve: int = DEFAULT_RESERVE, **_kwargs: Any):
        super().__init__()
        self.reserve = max(1, int(reserve))
        self.length = 0
        self.key_buffer: Optional[torch.Tensor] = None  # [B, kvh, capacity, D]
        self.value_buffer: Optional[torch.Tensor] = None  # [B, kvh, capacity, Dv]

    @property
    def capacity(self) -> int:
        return 0 if self.key_buffer is None else self.key_buffer.shape[-2]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self._allocate(key_states, value_states, key_states.shape[-2] + self.reserve)
        self.is_initialized = True

    def _allocate(self, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int) -> None:
        """(Re)allocate both buffers with `capacity` tokens, keeping the filled prefix."""
        b, h, _, d = key_states.shape
        keys = key_states.new_empty((b, h, capacity, d))
        values = value_states.new_empty((b, value_states.shape[1], capacity, value_states.shape[-1]))
        if self.length:
            keys.narrow(2, 0, self.length).copy_(self.keys)
            values.narrow(2, 0, self.length).copy_(self.values)
        self.key_buffer, self.value_buffer = keys, values

    def _refresh(self) -> None:
        self.keys = self.key_buffer.narrow(2, 0, self.length)
        self.values = self.value_buffer.narrow(2, 0, self.length)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new states [B, kvh, n, D] after the filled prefix; return the filled views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            self._allocate(key_states, value_states, end + max(self.reserve, end // 4))
        self.key_buffer.narrow(2, self.length, end - self.length).copy_(key_states)
        self.value_buffer.narrow(2, self.length, end - self.length).copy_(value_states)
        self.length = end
        self._refresh()
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1  # grows on demand

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last -tokens_to_remove tokens (a negative count, as transformers' DynamicLayer)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative count of tokens to drop, got {tokens_to_remove}")
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        self.length = max(0, self.length + tokens_to_remove)
        self._refresh()

    def reset(self) -> None:
        self.length = 0
        if self.is_initialized:
            self._refresh()

    def _unsupported(self, *_args: Any, **_kwargs: Any) -> None:
        raise NotImplementedError("PreallocatedLayer holds one sequence on one device (no beam search, batch "
                                  "reshaping or offloading); use transformers' DynamicCache for that")

    offload = prefetch = reorder_cache = batch_repeat_interleave = batch_select_indices = _unsupported


class PreallocatedCache(Cache):
    """A `Cache` of `PreallocatedLayer`s for the full-attention layers of `config`'s text model
    (transformers' dynamic layers for any other kind). `reserve`: tokens allocated beyond the
    prefill, e.g. max_new_tokens + K + 1 for a decode."""

    def __init__(self, config: Any, reserve: int = DEFAULT_RESERVE):
        layer_types, per_layer_kwargs = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
        layers = [PreallocatedLayer(reserve) if kind == "full_attention" else DYNAMIC_LAYER_TYPE_MAPPING[kind](**kwargs)
                  for kind, kwargs in zip(layer_types, per_layer_kwargs)]
        super().__init__(layers=layers)
