"""The engine's view of a model: an `HFAdapter` that starts per-sample `Session`s.

Adapters are the only code that touches HF model objects: inputs, prefill, block forwards
with the right position ids, cache cropping, visual features, version shims. The engine
never branches on model family. `HFAdapter.start` is the one prefill body (full or pruned); a
family adds input preparation and small hooks (token types, prompt positions, its visual
features, extra forward kwargs of a pruned prefill). Probes live in `probes.py`, the KV cache in
`cache.py`.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch

from lvspec_eval.adapters.cache import DEFAULT_RESERVE, PreallocatedCache
from lvspec_eval.adapters.probes import (AttentionProbe, HiddenCapture, LayerMeanProbe, prefill_video_attention,
                                         video_attention_share)
from lvspec_eval.metrics.timing import Stopwatch
from lvspec_eval.pruning import ALL_LAYERS, VIDEO_KEEP_KEY

#: token types of a prompt position (Qwen's `mm_token_type_ids` values)
TEXT, IMAGE, VIDEO = 0, 1, 2


@dataclass
class Prefill:
    """What a session's prefill tells the engine."""

    logits: torch.Tensor  # [V] logits at the last prompt position
    prompt_ids: torch.Tensor  # [S] prompt token ids
    text_mask: torch.Tensor  # [S] bool, prompt positions that hold text (not visual placeholders)
    visual_features: Optional[torch.Tensor]  # [Nv, H] projected visual features inserted at prefill
    hidden: Optional[torch.Tensor]  # [S, H] hidden states at the capture layer (if asked)
    video_coords: Optional[torch.Tensor] = None  # [Nvid, 3] long (frame, row, col) of each video token, prompt order
    video_tokens_fed: Optional[int] = None  # video tokens this model prefilled on (< Nvid when pruned)
    video_attention_probe: Optional[Any] = None  # the prefill's attention probe (its `result` is `video_attention`)

    @property
    def video_attention(self) -> Optional[torch.Tensor]:
        """[Nvid] attention from the prompt tokens after the video (if asked), computed on first read:
        a ranking that no drafter asks for costs nothing."""
        return None if self.video_attention_probe is None else self.video_attention_probe.result


class Session:
    """Per-sample decoding state of one model: its KV cache, its length, its rope state.

    `extend(ids)` feeds k new tokens after the cached prefix in ONE forward and returns their
    logits [k, V]; `crop(n)` keeps the first n cached tokens. Sessions of the same adapter are
    independent (Self-SD runs two over one set of weights)."""

    def __init__(self, adapter: "HFAdapter", cache: Any, length: int, capture_layer: Optional[int], offset: int = 0):
        self.adapter = adapter
        self.device = adapter.input_device
        self.cache = cache
        self.length = length
        # a token fed after `length` cached ones sits at position length + offset (offset: the model's
        # rope delta plus the video tokens a pruned prefill left out)
        self.offset = offset
        self.capture_layer = capture_layer
        self.last_hidden: Optional[torch.Tensor] = None  # [k, H] of the last extend, if capturing
        self.profile = False  # when True, extend() accumulates its device-synchronised time
        self._watch = Stopwatch(self.device)
        self.forward_s = 0.0  # model forwards only (probe computations excluded)
        self.probe_s = 0.0  # video-attention probe computations inside those forwards (engine overhead)
        self.video_probe: Optional[tuple[int, torch.Tensor]] = None  # (layer, video rows) -> last_video_attention
        self.last_video_attention: Optional[torch.Tensor] = None  # [k] of the last extend, if probing

    @property
    def vocab_size(self) -> int:
        return self.adapter.vocab_size

    def position_ids(self, k: int) -> torch.Tensor:  # [1, k]
        """Explicit 1D position ids for k tokens after the cached prefix (a family may override)."""
        start = self.length + self.offset
        return torch.arange(start, start + k, device=self.device).view(1, k)

    def extend(self, ids: torch.Tensor, last_only: bool = False) -> torch.Tensor:  # ids: [k] -> logits [k, V]
        """Feed k tokens in one forward; their logits [k, V] ([1, V] with `last_only`: the output layer
        runs on the last position only, as a drafter step needs)."""
        ids = ids.to(self.device).view(1, -1)  # [1, k]
        k = ids.shape[1]
        kwargs = {"input_ids": ids, "position_ids": self.position_ids(k), "use_cache": True,
                  self.adapter.cache_kwarg: self.cache}
        if last_only:
            kwargs["logits_to_keep"] = 1
        probe = self.adapter.video_attention(self, *self.video_probe) if self.video_probe else None
        if probe is not None:
            probe.timed = self.profile
        watch = self._watch if self.profile else None
        if watch:
            watch.start()
        with torch.inference_mode(), self.adapter.capture(self.capture_layer) as captured, \
                probe if probe is not None else contextlib.nullcontext():
            out = self.adapter.model(**kwargs)
        if watch:
            spent = watch.stop()
            probe_s = probe.spent_s if probe is not None else 0.0
            self.forward_s += spent - probe_s
            self.probe_s += probe_s
        if probe is not None:
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


def kept_rows(video_rows: torch.Tensor, keep: torch.Tensor, length: int) -> torch.Tensor:
    """Prompt rows a pruned prefill feeds: every non-video row and the kept video rows -> [S] bool.
    video_rows: [Nvid] prompt positions of the video tokens; keep: [B] indices into them."""
    rows = torch.ones(length, dtype=torch.bool)
    rows[video_rows.cpu()] = False
    rows[video_rows.cpu()[keep.cpu()]] = True
    return rows


@dataclass
class VisualFeatures:
    """A model's own projected visual features for a pruned prefill (prompt order)."""

    image: Optional[torch.Tensor] = None  # [Ni, H]
    video: Optional[torch.Tensor] = None  # [Nvid, H]
    extra: dict[str, Any] = field(default_factory=dict)  # family data for `pruned_forward_kwargs` (e.g. DeepStack)


def feature_rows(pooled: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
    """A vision tower's pooled output (a tensor [..., N, H] or a list of them, one per image or
    video) as one [N_total, H] tensor in prompt order."""
    if torch.is_tensor(pooled):
        return pooled.flatten(0, -2)
    return torch.cat([p.flatten(0, -2) for p in pooled], 0)


class HFAdapter:
    """Shared HF plumbing and the one prefill body; a family subclass adds input preparation and
    the hooks below `# -- per family`."""

    session_class = Session
    #: "preallocated" (`PreallocatedCache`: no copy per forward) or "dynamic" (transformers'
    #: DynamicCache, which concatenates per forward; kept for comparison, see benchmarks/cache_scaling.py)
    cache_kind = "preallocated"
    #: cache tokens allocated beyond the prompt at prefill when `start` gets no `reserve`
    cache_reserve = DEFAULT_RESERVE

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

    # -- probes and cache ---------------------------------------------------------------------
    def capture(self, layer_index: Optional[int]) -> HiddenCapture:
        return HiddenCapture(None if layer_index is None else self.decoder_layers()[layer_index])

    def attention_probe(self, layer_index: Optional[Union[int, str]], video_rows: torch.Tensor, cache: Any) -> Any:
        """A `prefill_video_attention` probe on decoder layer `layer_index` of a full prefill into
        `cache`; with `ALL_LAYERS` ("all") the mean of that probe over every decoder layer (SpecVLM's
        ranking); a no-op context giving None when layer_index is None or there is no video."""
        if layer_index is None or video_rows.numel() == 0:
            return contextlib.nullcontext(None)
        layers = self.decoder_layers()
        if layer_index == ALL_LAYERS:
            return LayerMeanProbe([prefill_video_attention(layer.self_attn, cache, video_rows) for layer in layers])
        return prefill_video_attention(layers[layer_index].self_attn, cache, video_rows)

    def video_attention(self, session: Session, layer_index: int, video_rows: torch.Tensor) -> AttentionProbe:
        """A `video_attention_share` probe on decoder layer `layer_index` of `session`'s next extend."""
        return video_attention_share(self.decoder_layers()[layer_index].self_attn, session.cache, video_rows)

    def new_cache(self, reserve: Optional[int] = None) -> Any:
        """An empty KV cache for one session; `reserve`: tokens to allocate beyond the prefill."""
        if self.cache_kind == "dynamic":
            from transformers import DynamicCache

            return DynamicCache(config=self.model.config)
        if self.cache_kind != "preallocated":
            raise ValueError(f"cache_kind must be 'preallocated' or 'dynamic', not {self.cache_kind!r}")
        return PreallocatedCache(self.model.config, reserve=self.cache_reserve if reserve is None else reserve)

    # -- per family -------------------------------------------------------------------------
    def token_types(self, inputs: dict[str, Any]) -> torch.Tensor:
        """[S] long: TEXT, IMAGE or VIDEO for each prompt position."""
        raise NotImplementedError

    def prompt_positions(self, inputs: dict[str, Any], types: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Position ids of the full prompt ([..., 1, S], as the model's forward takes them) and the
        offset of the tokens after it (a token at cache index i sits at position i + offset)."""
        raise NotImplementedError

    def visual_features(self, inputs: dict[str, Any]) -> VisualFeatures:
        """This model's own projected image and video features (for a pruned prefill)."""
        raise NotImplementedError

    def video_coords(self, inputs: dict[str, Any]) -> torch.Tensor:
        """[Nvid, 3] long (frame, row, col) of each video token, prompt order."""
        raise NotImplementedError

    def output_features(self, out: Any) -> list[torch.Tensor]:
        """The visual features a full prefill's output carries: [video [Nvid, H], image [Ni, H]] (those present)."""
        found = [getattr(out, name, None) for name in ("video_outputs", "image_outputs")]
        return [feature_rows(o.pooler_output) for o in found if o is not None]

    def pruned_forward_kwargs(self, inputs: dict[str, Any], features: VisualFeatures, types: torch.Tensor,
                              rows: torch.Tensor) -> dict[str, Any]:
        """Extra forward kwargs of a pruned prefill, computed from the kept rows ([S] bool), e.g.
        features that a family adds at the visual positions inside the decoder (none by default)."""
        return {}

    def pruned_forward(self, **kwargs: Any) -> Any:
        """The pruned prefill's forward from merged embeddings (`inputs_embeds`, `position_ids`, the
        cache, `pruned_forward_kwargs`); returns an output with `.logits`."""
        return self.model(**kwargs)

    # -- prefill ------------------------------------------------------------------------------
    def start(self, inputs: dict[str, Any], capture_layer: Optional[int] = None,
              attention_layer: Optional[int] = None, reserve: Optional[int] = None) -> tuple[Session, Prefill]:
        """Prefill on `inputs` (processor output) into a new session.

        capture_layer: Prefill.hidden holds that decoder layer's output. attention_layer:
        Prefill.video_attention holds the attention the prompt gets from the tokens after the video
        at that layer (full prefill only). `inputs[VIDEO_KEEP_KEY]` (indices into the video tokens):
        only those video tokens are fed, each at its ORIGINAL position (SpecVLM drafter); the tokens
        after the prompt continue from the full prompt's positions. reserve: cache tokens to
        allocate beyond the prompt (default `cache_reserve`)."""
        device = self.input_device
        inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
        keep = inputs.pop(VIDEO_KEEP_KEY, None)
        if keep is not None and attention_layer is not None:
            raise ValueError("the prefill attention probe reads a full prompt; drop attention_layer or the video keep indices")
        input_ids = inputs["input_ids"]  # [1, S]
        s = input_ids.shape[1]
        types = self.token_types(inputs)  # [S]
        video_rows = (types == VIDEO).nonzero().view(-1)  # [Nvid]
        position_ids, offset = self.prompt_positions(inputs, types)  # [..., 1, S]
        cache = self.new_cache(reserve)
        with torch.inference_mode(), self.capture(capture_layer) as captured, \
                self.attention_probe(attention_layer, video_rows, cache) as probe:
            if keep is None:
                out = self.model(**inputs, position_ids=position_ids, use_cache=True, logits_to_keep=1,
                                 **{self.cache_kwarg: cache})
                visual = self.output_features(out)
                fed_len, fed_video = s, int(video_rows.numel())
            else:
                features = self.visual_features(inputs)
                embeds = self.model.get_input_embeddings()(input_ids)  # [1, S, H]
                for kind, feats in ((IMAGE, features.image), (VIDEO, features.video)):
                    if feats is not None:
                        embeds = embeds.masked_scatter((types == kind).view(1, -1, 1), feats.to(embeds.dtype))
                rows = kept_rows(video_rows, keep, s).to(device)  # [S] bool
                out = self.pruned_forward(inputs_embeds=embeds[:, rows], position_ids=position_ids[..., rows],
                                          use_cache=True, logits_to_keep=1, **{self.cache_kwarg: cache},
                                          **self.pruned_forward_kwargs(inputs, features, types, rows))
                visual = [v for v in (features.video, features.image) if v is not None]
                fed_len, fed_video = int(rows.sum()), int(keep.numel())
        session = self.session_class(self, cache, fed_len, capture_layer, offset=offset + s - fed_len)
        prefill = Prefill(
            logits=out.logits[0, -1],
            prompt_ids=input_ids[0],
            text_mask=types == TEXT,
            visual_features=torch.cat(visual, 0) if visual else None,
            hidden=captured[0][0] if captured else None,
            video_coords=self.video_coords(inputs) if video_rows.numel() else None,
            video_tokens_fed=fed_video,
            video_attention_probe=probe,
        )
        return session, prefill
