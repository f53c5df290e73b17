"""Assembly of one sample's decode fields: what its decode (and the paired `ar` decode) gave, with the answer
texts. The fields every record carries come from `lvspec_eval.metrics.records.base_record`; meanings:
`lvspec_eval.metrics.schema`."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any, Optional

import torch

from lvspec_eval.engine import DecodeResult
from lvspec_eval.metrics.records import decode_fields, paired_fields


@dataclass
class Decoded:
    """One decode with its answer text and its per-token texts."""

    result: DecodeResult
    text: str
    token_texts: list[str]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"



def sample_fields(decoded: Decoded, num_draft_tokens: int, prompt_tokens: int,
                  ar: Optional[Decoded] = None) -> dict[str, Any]:
    """The decode's fields of a record; `ar`: the paired baseline's decode of the same sample."""
    fields = decode_fields(decoded.result, num_draft_tokens)
    fields["text"] = decoded.text
    fields["token_texts"] = decoded.token_texts
    if ar is not None:
        fields.update(paired_fields(decoded.result, ar.result, decoded.text, ar.text))
        fields["ar_token_texts"] = ar.token_texts
    fields["prompt_tokens"] = prompt_tokens
    return fields
