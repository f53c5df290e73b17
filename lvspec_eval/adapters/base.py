"""The engine's view of a model: a `ModelAdapter` that starts per-sample `Session`s.

Adapters are the only code that touches HF model objects: inputs, prefill, block forwards
with the right position ids, cache cropping, visual features, version shims. The engine
never branches on model family.
"""

from __future__ import annotations

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
        with torch.inference_mode(), self.adapter.capture(self.capture_layer) as captured:
            out = self.adapter.model(**kwargs)
        if watch:
            self.forward_s += watch.stop()
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

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    # -- per family -------------------------------------------------------------------------
    def start(self, inputs: dict[str, Any], capture_layer: Optional[int] = None) -> tuple[Session, Prefill]:
        raise NotImplementedError
