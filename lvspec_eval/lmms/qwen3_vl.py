"""`lvspec_qwen3_vl`: Qwen3-VL targets and drafters, dense or MoE in any pairing (lmms-eval chat model)."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from loguru import logger

from lvspec_eval.adapters.qwen3_vl import Qwen3VLAdapter, check_checkpoints, greedy_deviations
from lvspec_eval.config import DEFAULT_QWEN3_VL_DRAFT, DEFAULT_QWEN3_VL_TARGET, DecodeConfig, LVSpecArgs
from lvspec_eval.lmms.backend import LVSpecBackend


class LVSpecQwen3VL(LVSpecBackend):
    """Speculative decoding of a Qwen3-VL target with a Qwen3-VL drafter (dense or MoE each).

    Inputs, dtype (bfloat16), frame rule, pixel bounds and max_new_tokens (128) as lmms-eval's chat
    `qwen3_vl`, and its stop semantics: greedy, EOS (`<|im_end|>`) only, the task's `until` strings
    ignored (`honours_until`). Checkpoints are checked (Qwen3-VL, not Qwen3.5; a drafter that reads
    the target's video inputs) before any weights load. Default pair: Qwen3-VL-32B-Instruct drafted
    by Qwen3-VL-4B-Instruct."""

    adapter_class = Qwen3VLAdapter
    family = "qwen3_vl"
    builtin = "qwen3_vl"
    default_max_new_tokens = 128  # lmms-eval qwen3_vl's DEFAULT_GEN_KWARGS
    #: lmms-eval's chat qwen3_vl never reads `until` (its generate stops at EOS or max_new_tokens)
    honours_until = False

    def __init__(self, batch_size: Any = 1, device: Optional[str] = None, max_batch_size: Any = None, **kwargs: Any):
        kwargs.setdefault("pretrained", DEFAULT_QWEN3_VL_TARGET)
        kwargs.setdefault("draft_pretrained", DEFAULT_QWEN3_VL_DRAFT)
        args = LVSpecArgs.from_kwargs(**kwargs)  # bad args first, with the list of valid ones
        drafts = args.method != "ar" and args.draft_pretrained != "self"
        check_checkpoints(args.pretrained, args.draft_pretrained if drafts else None)
        super().__init__(batch_size=batch_size, device=device, max_batch_size=max_batch_size, **kwargs)
        found = greedy_deviations(self.target.model.generation_config)
        if found:
            logger.warning(f"lvspec: {args.pretrained}'s generation_config sets {', '.join(found)}: lmms-eval's "
                           "qwen3_vl applies these in greedy decoding, lvspec decodes by plain argmax, so `ar` "
                           "can differ from the built-in on this checkpoint")

    def _decode_config(self, gen_kwargs: dict[str, Any]) -> DecodeConfig:
        cfg = super()._decode_config(gen_kwargs)
        return cfg if self.honours_until else dataclasses.replace(cfg, until=())
