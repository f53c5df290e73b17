"""Assembly of one sample's record: what the run and the request say about it, and what its
decode (and the paired `ar` decode) gave. Field meanings and the writer: `lvspec_eval.metrics.records`."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any, Optional

import torch

from lvspec_eval import __version__
from lvspec_eval.config import DecodeConfig, LVSpecArgs
from lvspec_eval.engine import DecodeResult
from lvspec_eval.metrics.records import RECORD_VERSION, decode_fields, paired_fields


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


def base_record(args: LVSpecArgs, *, family: str, task: str, split: str, doc_id: Any, cfg: DecodeConfig,
                device: torch.device, rank: int, world_size: int) -> dict[str, Any]:
    """The fields a record has before (or without) a decode: run settings and the request."""
    return {
        "record_version": RECORD_VERSION,
        "lvspec_eval_version": __version__,
        "task": task, "split": split, "doc_id": doc_id,
        "method": args.method,
        "family": family,
        "target": args.pretrained,
        "draft": None if args.method == "ar" else args.draft_pretrained,
        "params": args.rule_params(),
        "dtype": args.dtype,
        "device": str(device),
        "device_name": device_name(device),
        "rank": rank,
        "world_size": world_size,
        "paired_baseline": args.paired_baseline,
        "max_new_tokens": cfg.max_new_tokens,
        "until": list(cfg.until),
        "video": {"max_num_frames": args.max_num_frames, "fps": args.fps, "min_pixels": args.min_pixels,
                  "max_pixels": args.max_pixels},
    }


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
