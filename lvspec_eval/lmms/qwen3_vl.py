"""`lvspec_qwen3_vl`: Qwen3-VL targets and drafters, dense or MoE in any pairing (lmms-eval chat model)."""

from __future__ import annotations

from typing import Any, Optional

from lvspec_eval.adapters.qwen3_vl import Qwen3VLAdapter, check_checkpoints
from lvspec_eval.config import DEFAULT_QWEN3_VL_DRAFT, DEFAULT_QWEN3_VL_TARGET, QWEN3_VL_BUILTIN, LVSpecArgs
from lvspec_eval.lmms.backend import LVSpecBackend
from lvspec_eval.lmms.pair import loads_drafter


class LVSpecQwen3VL(LVSpecBackend):
    """Speculative decoding of a Qwen3-VL target with a Qwen3-VL drafter (dense or MoE each).

    Inputs, frame rule, pixel bounds, defaults and stops as lmms-eval's chat `qwen3_vl`
    (`QWEN3_VL_BUILTIN`): bfloat16, max_new_tokens 128, greedy, EOS (`<|im_end|>`) only, the task's
    `until` strings ignored. Checkpoints are checked (Qwen3-VL, not Qwen3.5; a drafter that reads
    the target's video inputs) before any weights load. Default pair: Qwen3-VL-32B-Instruct drafted
    by Qwen3-VL-4B-Instruct."""

    adapter_class = Qwen3VLAdapter
    family = "qwen3_vl"
    builtin = QWEN3_VL_BUILTIN

    def __init__(self, batch_size: Any = 1, device: Optional[str] = None, max_batch_size: Any = None, **kwargs: Any):
        kwargs.setdefault("pretrained", DEFAULT_QWEN3_VL_TARGET)
        kwargs.setdefault("draft_pretrained", DEFAULT_QWEN3_VL_DRAFT)
        args = LVSpecArgs.from_kwargs(**kwargs)  # bad args first, with the list of valid ones
        check_checkpoints(args.pretrained, args.draft_pretrained if loads_drafter(args) else None)
        super().__init__(batch_size=batch_size, device=device, max_batch_size=max_batch_size, **kwargs)
