"""`lvspec_qwen`: Qwen2.5-VL target and drafter (lmms-eval chat model)."""

from lvspec_eval.adapters.qwen2_5_vl import QwenVLAdapter
from lvspec_eval.lmms.backend import LVSpecBackend


class LVSpecQwen(LVSpecBackend):
    """Speculative decoding of a Qwen2.5-VL target with a Qwen2.5-VL drafter."""

    adapter_class = QwenVLAdapter
    family = "qwen2_5_vl"
