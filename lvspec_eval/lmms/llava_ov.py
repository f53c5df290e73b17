"""`lvspec_llava_ov`: LLaVA-OneVision target and drafter (lmms-eval chat model)."""

from typing import Any

from lvspec_eval.adapters.llava_onevision import LlavaOnevisionAdapter
from lvspec_eval.config import DEFAULT_LLAVA_OV_DRAFT, DEFAULT_LLAVA_OV_TARGET
from lvspec_eval.lmms.backend import LVSpecBackend


class LVSpecLlavaOV(LVSpecBackend):
    """Speculative decoding of a LLaVA-OneVision target with a LLaVA-OneVision drafter.

    Inputs as lmms-eval's simple `llava_hf` backend (`max_num_frames` decord frames, string
    prompt "<video>\n" + question through the tokenizer's chat template); `fps`, `min_pixels`
    and `max_pixels` do not apply. Default pair: llava-onevision-qwen2-72b-ov-hf / -7b-ov-hf."""

    adapter_class = LlavaOnevisionAdapter
    family = "llava_onevision"
    builtin = "llava_hf"
    default_max_new_tokens = 1024  # lmms-eval's llava_hf default

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("pretrained", DEFAULT_LLAVA_OV_TARGET)
        kwargs.setdefault("draft_pretrained", DEFAULT_LLAVA_OV_DRAFT)
        super().__init__(**kwargs)
