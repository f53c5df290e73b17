"""Probes: read a decoder layer during a forward without changing it.

- `HiddenCapture`: the output hidden states of one decoder layer (relevance_repr=hidden).
- `AttentionProbe`: the softmax attention of some query rows of one self-attention layer, reduced
  to what a caller needs: `prefill_video_attention` (SpecVLM's ranking of the video tokens at
  prefill) and `video_attention_share` (relevance_repr=attention, every verify forward).

Both attention probes compute through ONE function, `attention_probs`, as the model's eager
attention does: queries projected from the layer's input (q_proj, q_norm where the layer has one,
the model's own rotary), keys read from the layer's KV cache after the forward (past and new keys,
already rotated: nothing is recomputed or copied), scores in the model's dtype with the query
heads grouped per key head (GQA without repeating the keys), scaled, causally masked, softmax in
float32. Only the query rows asked for are computed. A forward hook on the attention module does
it after the module ran, so any attention backend (sdpa, eager, flash) works and the model's
forward is untouched. The prefill probe is lazy (`AttentionProbe(lazy=True)`): the hook computes
only the query rows' queries (while an offloaded layer's weights are in place) and the
probabilities are computed when the result is first read (a drafter that never starts pays the
queries of the prompt rows after the video, per layer, not the ranking).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from typing import Any, Callable, Optional

import torch

from lvspec_eval.metrics.timing import Stopwatch


def attention_probs(queries: torch.Tensor, keys: torch.Tensor, query_pos: torch.Tensor, scaling: float) -> torch.Tensor:
    """Softmax attention of query rows against keys, as eager attention computes it.

    queries: [1, h, Q, D] after rotary; keys: [1, kvh, L, D] after rotary (h = g * kvh, query head
    i reads key head i // g, as transformers' repeat_kv lays them out); query_pos: [Q] long, the
    key index of each query's own token (key j is visible to query i iff j <= query_pos[i]).
    Returns [h, Q, L] float32."""
    _, h, q_len, d = queries.shape
    kvh, length = keys.shape[1], keys.shape[2]
    grouped = queries[0].reshape(kvh, (h // kvh) * q_len, d)  # [kvh, g*Q, D]: heads of one key head together
    scores = torch.matmul(grouped, keys[0].transpose(-1, -2)).mul_(scaling).view(h, q_len, length)  # model dtype
    first = int(query_pos.min()) + 1  # keys before this one are visible to every query row
    future = torch.arange(first, length, device=scores.device).view(1, -1) > query_pos.to(scores.device).view(-1, 1)
    scores[:, :, first:].masked_fill_(future, float("-inf"))  # [Q, L - first] causal part only
    return scores.softmax(-1, dtype=torch.float32)  # [h, Q, L]


def layer_queries(attn: torch.nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The attention module's queries for `hidden` [1, Q, H] at rotary (cos, sin) [1, Q, D] -> [1, h, Q, D].

    Llama-style modules (Qwen2, Qwen2.5-VL, Qwen3-VL): q_proj, an optional per-head q_norm, and the
    `apply_rotary_pos_emb` of the module's own modeling file."""
    q = attn.q_proj(hidden).view(*hidden.shape[:2], -1, attn.head_dim)  # [1, Q, h, D]
    norm = getattr(attn, "q_norm", None)
    if norm is not None:
        q = norm(q)
    q = q.transpose(1, 2)  # [1, h, Q, D]
    rotary = inspect.getmodule(type(attn)).apply_rotary_pos_emb
    return rotary(q, q, cos, sin)[0]


class AttentionProbe:
    """Context manager: a forward hook on one self-attention module; after each forward `result` holds
    `reduce(probs)`, probs [h, Q, L] being `attention_probs` of the new rows from `first_row(k)` on
    (None: nothing to compute, `result = empty`) against every key of the layer's cache entry (past +
    the k new ones).

    lazy: the hook computes only the query rows' queries [1, h, Q, D] (inside the forward, while the
    module's weights are in place: with accelerate's offloading they are not, after it) and the key
    count L; `result` computes the probabilities on first read, from the first L keys of the layer's
    cache (a decode only appends after them). A prefill ranking that is never read (a short answer
    whose drafter never starts) then costs the queries of Q rows per layer.
    `spent_s`: seconds spent computing probabilities (engine overhead, not the model's forward),
    device-synchronised when `timed`."""

    def __init__(self, attn: torch.nn.Module, cache: Any, first_row: Callable[[int], Optional[int]],
                 reduce: Callable[[torch.Tensor], torch.Tensor], empty: Optional[torch.Tensor] = None,
                 lazy: bool = False):
        self.attn, self.cache = attn, cache
        self.first_row, self.reduce, self.empty, self.lazy = first_row, reduce, empty, lazy
        self.timed = False
        self.spent_s = 0.0
        self._result: Optional[torch.Tensor] = None
        self._pending: Optional[tuple] = None  # lazy: (queries [1, h, Q, D], L, k - first)

    def __enter__(self) -> "AttentionProbe":
        self._result, self._pending = None, None
        self.handle = self.attn.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()

    @property
    def result(self) -> Optional[torch.Tensor]:
        if self._pending is not None:
            self._result, self._pending = self._compute(*self._pending), None
        return self._result

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict, _output: Any) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)  # [1, k, H], normed layer input
        k = hidden.shape[1]
        first = self.first_row(k)
        if first is None:
            self._result, self._pending = self.empty, None
            return
        cos, sin = kwargs["position_embeddings"]  # [1, k, D] each
        length = self.cache.layers[module.layer_idx].keys.shape[2]  # past + the k new keys
        t0 = time.perf_counter()
        watch = Stopwatch(hidden.device) if self.timed else None
        if watch:
            watch.start()
        queries = layer_queries(module, hidden[:, first:], cos[:, first:], sin[:, first:])  # [1, h, Q, D]
        self.spent_s += watch.stop() if watch else time.perf_counter() - t0
        if self.lazy:
            self._pending = (queries, length, k - first)
        else:
            self._result, self._pending = self._compute(queries, length, k - first), None

    def _compute(self, queries: torch.Tensor, length: int, q_len: int) -> torch.Tensor:
        watch = Stopwatch(queries.device) if self.timed else None
        t0 = time.perf_counter()
        if watch:
            watch.start()
        module = self.attn
        with torch.inference_mode():  # a lazy probe computes after the forward's inference mode ended
            keys = self.cache.layers[module.layer_idx].keys[:, :, :length]  # [1, kvh, L, D]
            query_pos = torch.arange(length - q_len, length, device=keys.device)  # [Q]
            scaling = getattr(module, "scaling", module.head_dim ** -0.5)
            out = self.reduce(attention_probs(queries, keys, query_pos, scaling)).cpu()
        self.spent_s += watch.stop() if watch else time.perf_counter() - t0
        return out


class _IndexOn:
    """An index tensor, copied once to each device that asks for it: the device where a layer's
    probabilities are computed (its keys' device; not its weights', which sit on "meta" outside the
    forward when accelerate offloads the layer)."""

    def __init__(self, index: torch.Tensor):
        self.copies = {index.device: index}

    def on(self, device: torch.device) -> torch.Tensor:
        if device not in self.copies:
            self.copies[device] = next(iter(self.copies.values())).to(device)
        return self.copies[device]


def prefill_video_attention(attn: torch.nn.Module, cache: Any, video_rows: torch.Tensor) -> AttentionProbe:
    """Lazy probe for a full prefill: the attention the prompt tokens after the video give each video
    token, mean over heads and those query rows -> `result` [Nvid] (zeros when no token follows
    the video), computed when first read. video_rows: [Nvid] long, prompt positions of the video tokens."""
    first = int(video_rows.max()) + 1
    cols = _IndexOn(video_rows)
    return AttentionProbe(attn, cache, lambda k: first if first < k else None,
                          lambda probs: probs.mean(dim=(0, 1))[cols.on(probs.device)],  # [h, Q, L] -> [L] -> [Nvid]
                          empty=torch.zeros(video_rows.numel()), lazy=True)


def video_attention_share(attn: torch.nn.Module, cache: Any, video_rows: torch.Tensor) -> AttentionProbe:
    """Probe for one `Session.extend` of k tokens: the share of attention each new query puts on the
    prompt's video tokens (sum over video keys, mean over heads) -> `result` [k]. The query at block
    position j produces the logits that judge draft token j+1."""
    cols = _IndexOn(video_rows)

    def share(probs: torch.Tensor) -> torch.Tensor:  # [h, Q, L] -> [Q]
        on_video = torch.zeros(probs.shape[-1], dtype=probs.dtype, device=probs.device)  # [L]
        on_video[cols.on(probs.device)] = 1.0
        return (probs @ on_video).mean(0)  # sum over the video keys in one pass, mean over heads

    return AttentionProbe(attn, cache, lambda k: 0, share)


class LayerMeanProbe(contextlib.ExitStack):
    """Context manager over several probes of one forward: `result` is the mean of their results
    (SpecVLM's ranking averages the attention maps of every decoder layer: zju-jiyicheng/SpecVLM,
    utils/utils.py `convert_attention_to_score`), computed when first read (lazy probes compute then)."""

    def __init__(self, probes: list[AttentionProbe]):
        super().__init__()
        self.probes = probes
        self._result: Optional[torch.Tensor] = None

    def __enter__(self) -> "LayerMeanProbe":
        super().__enter__()
        self._result = None
        for probe in self.probes:
            self.enter_context(probe)
        return self

    @property
    def result(self) -> Optional[torch.Tensor]:
        if self._result is None:
            results = [p.result for p in self.probes]
            self._result = torch.stack(results).mean(0) if all(r is not None for r in results) else None
        return self._result

    @property
    def spent_s(self) -> float:
        return sum(p.spent_s for p in self.probes)


class HiddenCapture:
    """Context manager that records the output hidden states of one decoder layer (None: records nothing)."""

    def __init__(self, layer: Optional[torch.nn.Module]):
        self.layer = layer
        self.handle = None
        self.outputs: list[torch.Tensor] = []

    def __enter__(self) -> list[torch.Tensor]:
        if self.layer is not None:
            def hook(_module, _inp, out):
                self.outputs.append((out[0] if isinstance(out, tuple) else out).detach())

            self.handle = self.layer.register_forward_hook(hook)
        return self.outputs

    def __exit__(self, *exc: Any) -> None:
        if self.handle is not None:
            self.handle.remove()
