"""The engine's view of a model: a `ModelAdapter` that starts per-sample `Session`s.

Adapters are the only code that touches HF model objects: inputs, prefill, block forwards
with the right position ids, cache cropping, visual features, version shims. The engine
never branches on model family.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Optional

import torch

from lvspec_eval.metrics.timing import Stopwatch


@dataclass
class Prefill:
    """What a session's prefill tells the engine."""

    logits: torch.Tensor  # [V] logits at the last prompt position
    prompt_ids: torch.Tensor  # [S] prompt token ids
    text_mask: torch.Tensor  # [S] bool, prompt positions that hold text (not visual placeholders)
    visual_features: Optional[torch.Tensor]  # [Nv, H] projected visual features inserted at prefill
    hidden: Optional[torch.Tensor]  # [S, H] hidden states at the capture layer (if asked)
    video_coords: Optional[torch.Tensor] = None  # [Nvid, 3] long (frame, row, col) of each video token, prompt order
    video_attention: Optional[torch.Tensor] = None  # [Nvid] attention from the prompt tokens after the video (if asked)
    video_tokens_fed: Optional[int] = None  # video tokens this model prefilled on (< Nvid when pruned)


class Session:
    """Per-sample decoding state of one model: its KV cache, its length, its rope state.

    `extend(ids)` feeds k new tokens after the cached prefix in ONE forward and returns their
    logits [k, V]; `crop(n)` keeps the first n cached tokens. Sessions of the same adapter are
    independent (Self-SD runs two over one set of weights)."""

    def __init__(self, adapter: "HFAdapter", cache: Any, length: int, capture_layer: Optional[int]):
        self.adapter = adapter
        self.cache = cache
        self.length = length
        self.capture_layer = capture_layer
        self.last_hidden: Optional[torch.Tensor] = None  # [k, H] of the last extend, if capturing
        self.profile = False  # when True, extend() accumulates its device-synchronised time
        self.forward_s = 0.0
        self.video_probe: Optional[tuple[int, torch.Tensor]] = None  # (layer, video rows) -> last_video_attention
        self.last_video_attention: Optional[torch.Tensor] = None  # [k] of the last extend, if probing

    @property
    def vocab_size(self) -> int:
        return self.adapter.vocab_size

    def position_ids(self, k: int) -> Optional[torch.Tensor]:
        """Explicit position ids for k tokens after the prefix (None: the model's default)."""
        return None

    def extend(self, ids: torch.Tensor) -> torch.Tensor:  # ids: [k] -> logits [k, V]
        ids = ids.to(self.adapter.input_device).view(1, -1)
        k = ids.shape[1]
        kwargs: dict[str, Any] = {"input_ids": ids, "use_cache": True, self.adapter.cache_kwarg: self.cache}
        pos = self.position_ids(k)
        if pos is not None:
            kwargs["position_ids"] = pos
        watch = Stopwatch(self.adapter.input_device) if self.profile else None
        if watch:
            watch.start()
        probe = self.adapter.video_attention(self, *self.video_probe) if self.video_probe else contextlib.nullcontext()
        with torch.inference_mode(), self.adapter.capture(self.capture_layer) as captured, probe:
            out = self.adapter.model(**kwargs)
        if watch:
            self.forward_s += watch.stop()
        if self.video_probe:
            self.last_video_attention = probe.result
        self.length += k
        if captured:
            self.last_hidden = captured[-1][0]
        return out.logits[0]

    def crop(self, length: int) -> None:
        drop = self.cache.get_seq_length() - length
        if drop < 0:
            raise ValueError(f"cannot crop a cache of {self.cache.get_seq_length()} tokens to {length}")
        if drop:
            self.cache.crop(-drop)
        self.length = length

    def embed(self, ids: torch.Tensor) -> torch.Tensor:  # [k] -> [k, H]
        emb = self.adapter.model.get_input_embeddings()
        with torch.inference_mode():
            return emb(ids.to(emb.weight.device))

    def close(self) -> None:
        self.cache = None


class _Capture:
    """Context manager that records the output hidden states of one decoder layer."""

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

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.remove()


class _AttentionPreHook:
    """Context manager: a forward pre-hook on one self-attention module that stores
    `compute(module, hidden, cos, sin)` in `result` (the module's forward itself is untouched)."""

    attn: torch.nn.Module

    def __enter__(self):
        self.result = None

        def hook(module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)  # [1, S, H]
            cos, sin = kwargs["position_embeddings"]  # [1, S, D] each
            self.result = self.compute(module, hidden, cos, sin)

        self.handle = self.attn.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def compute(self, attn: torch.nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _VideoAttention(_AttentionPreHook):
    """Context manager for one `Session.extend`: the share of attention each new query puts on the
    prompt's video tokens, at one decoder layer (softmax over every cached and new key, mean over
    heads) -> `result` [k].

    The query at block position j produces the logits that judge draft token j+1, so this is how
    much that prediction looked at the video. Computed from the layer's input by a forward
    pre-hook (any attention backend; the model's forward is untouched), keys of the past from the
    session's KV cache (stored after rotary), the adapter's q/k projection (`project`) and rotary."""

    def __init__(self, attn: torch.nn.Module, rotary: Any, past_keys: Any, video_rows: torch.Tensor,
                 head_dim: int, project: Any = None):
        self.attn, self.rotary, self.past_keys = attn, rotary, past_keys
        self.video_rows, self.head_dim = video_rows, head_dim
        self.project = project or project_qk
        self.result: Optional[torch.Tensor] = None

    def compute(self, attn: torch.nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        k, d = hidden.shape[1], self.head_dim
        q, new_keys = self.project(attn, hidden, d)  # [1, h, k, D], [1, kvh, k, D]
        q, new_keys = self.rotary(q, new_keys, cos, sin)
        keys = torch.cat([self.past_keys(), new_keys], dim=2) if self.past_keys() is not None else new_keys
        keys = keys.repeat_interleave(q.shape[1] // keys.shape[1], dim=1)  # GQA
        scores = (q.float() @ keys.float().transpose(-1, -2)) * (d ** -0.5)  # [1, h, k, L+k]
        past = keys.shape[2] - k
        rows = torch.arange(k, device=scores.device).view(-1, 1) + past
        cols = torch.arange(keys.shape[2], device=scores.device).view(1, -1)
        probs = scores.masked_fill(cols > rows, float("-inf")).softmax(-1)[0]  # [h, k, L+k]
        return probs[:, :, self.video_rows.to(probs.device)].sum(-1).mean(0).cpu()  # [k]


class _AttentionProbe(_AttentionPreHook):
    """Context manager: the softmax attention of the prompt tokens after the video to each video
    token, at one decoder layer of a prefill (mean over heads and query positions) -> [Nvid].

    Works with any attention backend (sdpa, flash, eager): a forward pre-hook on the layer's
    self-attention reads its input (normed hidden states and rotary cos/sin, as the layer gets
    them) and recomputes, in float32, only the query rows after the video against all keys up to
    them; the model's own forward is not touched. Assumes llama-style attention (`rotary`, head_dim
    scaling) with q/k from `project` (the adapter's: plain projections for Qwen2 / Qwen2.5-VL, plus
    the per-head q/k RMSNorm for Qwen3)."""

    def __init__(self, attn: torch.nn.Module, rotary: Any, video_rows: torch.Tensor, n_heads: int, head_dim: int,
                 project: Any = None):
        self.attn, self.rotary = attn, rotary
        self.video_rows = video_rows  # [Nvid] long, prompt positions of the video tokens
        self.n_heads, self.head_dim = n_heads, head_dim
        self.project = project or project_qk
        self.result: Optional[torch.Tensor] = None  # [Nvid]

    def compute(self, attn: torch.nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        s = hidden.shape[1]
        first_query = int(self.video_rows.max()) + 1
        if first_query >= s:
            return torch.zeros(self.video_rows.numel())
        q, k = self.project(attn, hidden, self.head_dim)  # [1, h, S, D], [1, kvh, S, D]
        q = q[:, :, first_query:]  # [1, h, Q, D]: only the queries after the video
        q, _ = self.rotary(q, q, cos[:, first_query:], sin[:, first_query:])
        k, _ = self.rotary(k, k, cos, sin)
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # GQA: [1, h, S, D]
        scores = (q.float() @ k.float().transpose(-1, -2)) * (self.head_dim ** -0.5)  # [1, h, Q, S]
        rows = torch.arange(first_query, s, device=scores.device).view(-1, 1)
        cols = torch.arange(s, device=scores.device).view(1, -1)
        scores = scores.masked_fill(cols > rows, float("-inf"))  # causal
        probs = scores.softmax(-1)[0]  # [h, Q, S]
        return probs[:, :, self.video_rows.to(probs.device)].mean(dim=(0, 1)).cpu()  # [Nvid]


def project_qk(attn: torch.nn.Module, hidden: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama-style queries and keys of `hidden` [1, S, H] before rotary: ([1, h, S, D], [1, kvh, S, D])."""
    s = hidden.shape[1]
    q = attn.q_proj(hidden).view(1, s, -1, head_dim).transpose(1, 2)
    k = attn.k_proj(hidden).view(1, s, -1, head_dim).transpose(1, 2)
    return q, k


def kept_rows(video_rows: torch.Tensor, keep: torch.Tensor, length: int) -> torch.Tensor:
    """Prompt rows a pruned prefill feeds: every non-video row and the kept video rows -> [S] bool.
    video_rows: [Nvid] prompt positions of the video tokens; keep: [B] indices into them."""
    rows = torch.ones(length, dtype=torch.bool)
    rows[video_rows.cpu()] = False
    rows[video_rows.cpu()[keep.cpu()]] = True
    return rows


class HFAdapter:
    """Shared HF plumbing; a family subclass adds input preparation and position ids."""

    session_class = Session

    def __init__(self, model: torch.nn.Module, processor: Any, name: str):
        self.model = model
        self.processor = processor
        self.name = name
        self.tokenizer = getattr(processor, "tokenizer", processor)
        params = inspect.signature(model.forward).parameters
        # transformers 5.x renames `past_key_values` to `cache` (old name removed at 5.40)
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"

    # -- properties -------------------------------------------------------------------------
    @property
    def input_device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def decoder_layers(self) -> torch.nn.ModuleList:
        return self.model.model.language_model.layers

    def capture(self, layer_index: Optional[int]) -> _Capture:
        if layer_index is None:
            return _Capture(None)
        return _Capture(self.decoder_layers()[layer_index])

    def attention_probe(self, layer_index: Optional[int], video_rows: torch.Tensor) -> Any:
        """An `_AttentionProbe` on decoder layer `layer_index` (a no-op context when None)."""
        if layer_index is None or video_rows.numel() == 0:
            return contextlib.nullcontext(None)
        from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb  # llama-style rotary

        cfg = self.model.config.get_text_config()
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        attn = self.decoder_layers()[layer_index].self_attn
        return _AttentionProbe(attn, apply_rotary_pos_emb, video_rows, cfg.num_attention_heads, head_dim,
                               self.project_qk)

    def video_attention(self, session: Session, layer_index: int, video_rows: torch.Tensor) -> _VideoAttention:
        """A `_VideoAttention` probe on decoder layer `layer_index` of `session`'s next extend."""
        from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb  # llama-style rotary

        cfg = self.model.config.get_text_config()
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        layers = self.decoder_layers()
        index = layer_index % len(layers)

        def past_keys() -> Optional[torch.Tensor]:
            cache_layers = getattr(session.cache, "layers", None)
            if cache_layers is None or index >= len(cache_layers):
                return None
            return getattr(cache_layers[index], "keys", None)

        return _VideoAttention(layers[index].self_attn, apply_rotary_pos_emb, past_keys, video_rows, head_dim,
                               self.project_qk)

    def project_qk(self, attn: torch.nn.Module, hidden: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys of one attention layer before rotary, as that layer computes them (the
        attention probes' family hook): ([1, h, S, D], [1, kvh, S, D]). Llama-style by default."""
        return project_qk(attn, hidden, head_dim)

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    # -- per family -------------------------------------------------------------------------
    def start(self, inputs: dict[str, Any], capture_layer: Optional[int] = None,
              attention_layer: Optional[int] = None) -> tuple[Session, Prefill]:
        """Prefill on `inputs` (processor output). With `attention_layer`, Prefill.video_attention
        holds the attention the prompt gets from the tokens after the video at that layer. With
        `inputs[VIDEO_KEEP_KEY]` (indices into the video tokens), only those video tokens are fed,
        each at its original position (SpecVLM drafter)."""
        raise NotImplementedError
