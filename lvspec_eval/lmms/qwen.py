"""`lvspec_qwen`: Qwen2.5-VL target and drafter (lmms-eval chat model)."""

from lvspec_eval.adapters.qwen2_5_vl import QwenVLAdapter
from lvspec_eval.config import QWEN2_5_VL_BUILTIN
from lvspec_eval.lmms.backend import LVSpecBackend


class LVSpecQwen(LVSpecBackend):
    """Speculative decoding of a Qwen2.5-VL target with a Qwen2.5-VL drafter.

    Defaults and stops as lmms-eval's chat `qwen2_5_vl`: bfloat16, max_new_tokens 128, `until`
    ignored, EOS = the tokenizer's."""

    adapter_class = QwenVLAdapter
    family = "qwen2_5_vl"
    builtin = QWEN2_5_VL_BUILTIN
